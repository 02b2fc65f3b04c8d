"""One pair through every condition: the decode loop, the KV-cache edits, the conditions, the
references as rows of the same forwards, attention capture and the per-step metrics.

- :mod:`measure.engine.engine`: ``Engine``, its configuration, and one pair's ``ProblemResult``;
- :mod:`measure.engine.decode`: batched prefill and decoding of many streams at once;
- :mod:`measure.engine.cache`: KV-cache edits (fork, crop, append, prompt-region replacement,
  re-rotation of stale keys), per layer type, sliding windows included;
- :mod:`measure.engine.conditions`: the conditions, each a small dataclass over the cache edits;
- :mod:`measure.engine.scoring`: teacher-forced scoring of streams (the references);
- :mod:`measure.engine.attention`, :mod:`measure.engine.step_metrics`: attention mass and the
  per-token comparisons computed while decoding;
- :mod:`measure.engine.batching`, :mod:`measure.engine.memory`: padding and how many rows fit;
- :mod:`measure.engine.events`: the listener that live views subscribe to;
- :mod:`measure.engine.results`: what one run produces (``RunResult``) and the reference names.

The engine does not know about files, calibration or reports: it returns arrays.
"""
