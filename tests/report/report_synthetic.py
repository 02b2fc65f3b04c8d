"""Synthetic sample records with a known answer: controls are noise, change runs favour B from a
planted token on. Enough problems to calibrate; every field the reports read is present.

Imported by the report tests (pytest puts this folder on sys.path for them).
"""

from __future__ import annotations

import zlib

import numpy as np

N_GEN = 40
T0 = 8
SWITCH = 6  # 1-based token after the change at which injection runs start to favour B


def _record(pid, condition, point, t0, r_after, vt, outcome, gap):
    """A sample record whose log-ratio after t0 is ``r_after`` (the ignore stream before t0)."""
    rng = np.random.default_rng(zlib.crc32(f"{pid}/{condition}/{point}".encode()))  # stable across processes
    ignore_lp = -1.0 - rng.uniform(0, 0.2, N_GEN)
    r = np.concatenate([-np.abs(rng.normal(0, 0.3, t0)), r_after])[:N_GEN]
    if vt is None:
        r = np.zeros(N_GEN)
    oracle_lp = ignore_lp + r
    kl_matched = np.full(N_GEN, gap)
    return {
        "key": f"{pid}/{condition}/{point}", "problem_id": pid, "condition": condition, "point": point, "t0": t0,
        "variation_type": vt, "kind": "math", "source": "builtin",
        "arrays": {"logprob_ref": {"oracle": oracle_lp.tolist(), "ignore": ignore_lp.tolist(), "matched": oracle_lp.tolist()},
                   "kl": {"oracle": np.maximum(-r, 0).tolist(), "ignore": np.maximum(r, 0).tolist(),
                          "matched": kl_matched.tolist()}},
        "stop_reason": "eos", "answer_a": "1", "answer_b": "2",
        "tokens": {"prompt": [1, 2, 3], "inserted": [4, 5] if condition in ("injection", "noise", "repeat") else [],
                   "generated": list(range(10, 10 + N_GEN))},
        "texts": {"prompt": "A", "inserted": "U" if condition in ("injection", "noise", "repeat") else "",
                  "generated": "text", "continuation": "text", "generated_pieces": [f"w{i}" for i in range(N_GEN)]},
        "spans": {},
        "checks": {"full_recompute_max_kl": 1e-9},
        "metrics": {"adaptation_gap": gap, "outcome": outcome, "n_after": N_GEN - t0,
                    **{f"outcome_{o}": outcome == o for o in ("adapted", "stale", "other", "unfinished")}},
    }


def synthetic_records(n_changed=40, n_identical=8, seed=0, adapted_answers=True):
    rng = np.random.default_rng(seed)
    records = []
    n_after = N_GEN - T0
    for i in range(n_changed + n_identical):
        pid = f"p{i:03d}"
        vt = "single_number" if i < n_changed else None
        records.append(_record(pid, "ignore", "-", 0, -np.abs(rng.normal(0, 0.3, N_GEN)), vt, "stale", 0.0))
        records.append(_record(pid, "oracle", "-", 0, np.abs(rng.normal(0, 0.3, N_GEN)), vt,
                               "adapted" if adapted_answers else "other", 0.0))
        for condition in ("noise", "repeat"):
            records.append(_record(pid, condition, f"t{T0}", T0, rng.normal(-0.1, 0.3, n_after), vt, "stale", 0.5))
        for condition, shift in (("injection", 3.0), ("flush", 3.0), ("partial", 3.0)):
            after = -np.abs(rng.normal(0, 0.3, n_after))
            after[SWITCH - 1:] = shift + rng.normal(0, 0.2, n_after - SWITCH + 1)
            gap = {"injection": 0.2, "flush": 0.0, "partial": 0.1}[condition] + rng.uniform(0, 0.05)
            records.append(_record(pid, condition, f"t{T0}", T0, after, vt, "adapted", gap))
    return records


