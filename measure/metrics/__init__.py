"""Per-run metrics: pure functions over the per-position arrays of a RunResult.

One concern per module:

- ``divergence``: KL, JS over the vocabulary (torch or numpy), log-ratio r(t)
- ``windows``: immediate (1-5), short (6-20), long (21+) window means after t0
- ``latency``: detection, adaptation, stabilization latencies, right-censored
- ``attribution``: injected / original / mixed / neither per token
- ``attention_curves``: attention onto spans, attention ratio
- ``similarity``: hidden-state cosine per layer
- ``semantic``: MiniLM similarity of continuation texts (lazy-loaded)
- ``answers``: final-answer extraction, adapted/stale/other, QA EM/F1
- ``registry``: direction and aggregation of every metric column
- ``summarize``: ``summarize_run(run, problem)`` -> flat dict

Positions after the change are counted 1-based from t0 everywhere (see ``latency``).

The package imports none of them, so that the engine (whose results name the references these
modules read) can use ``divergence`` without a cycle.
"""
