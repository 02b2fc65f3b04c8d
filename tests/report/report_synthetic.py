"""Synthetic sample records with a known answer: controls are noise, change runs favour B from a
planted token on. Enough problems to calibrate; every field the reports read is present.

Imported by the report tests (pytest puts this folder on sys.path for them).
"""

from __future__ import annotations

import zlib

import numpy as np

from measure.records.record import as_records

N_GEN = 40
T0 = 8
SWITCH = 6  # 1-based token after the change at which injection runs start to favour B


def _record(pid, condition, point, t0, r_after, vt, outcome, gap, gain=3.0):
    """A sample record whose log-ratio after t0 is ``r_after`` (the ignore stream before t0) and
    whose KL(P_oracle || P_ignore) is ``gain`` at every token (0 for identical problems)."""
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
                          "matched": kl_matched.tolist()},
                   "kl_oracle_ignore": np.full(N_GEN, 0.0 if vt is None else gain).tolist()},
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
    """Typed records (:class:`measure.records.record.Record`) of ``n_changed`` changed and
    ``n_identical`` identical problems at one point, the references included."""
    rng = np.random.default_rng(seed)
    records = []
    n_after = N_GEN - T0
    for i in range(n_changed + n_identical):
        pid = f"p{i:03d}"
        vt = "single_number" if i < n_changed else None
        gain = 0.0 if i % 10 == 9 else 3.0  # every tenth problem: B vs A changes nothing the run could show
        records.append(_record(pid, "ignore", "-", 0, -np.abs(rng.normal(0, 0.3, N_GEN)), vt, "stale", 0.0))
        records.append(_record(pid, "oracle", "-", 0, np.abs(rng.normal(0, 0.3, N_GEN)), vt,
                               "adapted" if adapted_answers else "other", 0.0))
        for condition in ("noise", "repeat"):
            records.append(_record(pid, condition, f"t{T0}", T0, rng.normal(-0.1, 0.3, n_after), vt, "stale", 0.5, gain))
        for condition, shift in (("injection", 3.0), ("flush", 3.0), ("partial", 3.0)):
            after = -np.abs(rng.normal(0, 0.3, n_after))
            after[SWITCH - 1:] = shift + rng.normal(0, 0.2, n_after - SWITCH + 1)
            gap = {"injection": 0.2, "flush": 0.0, "partial": 0.1}[condition] + rng.uniform(0, 0.05)
            records.append(_record(pid, condition, f"t{T0}", T0, after, vt, "adapted", gap, gain))
    return as_records(records)




#: Strategies of :func:`strategy_records`: (number of updates, final problem, update texts).
STRATEGY_SCHEDULES = {
    "multi": ("c", ("Correction: Sarah has 7 apples, not 5.", "Correction: Sarah has 9 apples, not 7.")),
    "multi_retract": ("a", ("Correction: Sarah has 7 apples, not 5.",
                            "Ignore that correction, the original problem stands.")),
    "gradual": ("b", ("Correction: Sarah", " has 7 apples,", " not 5.")),
}
UPDATE_GAP = 10


def strategy_records(n_problems=12, seed=0, strategies=tuple(STRATEGY_SCHEDULES), point=f"t{T0}", gap=UPDATE_GAP):
    """Strategy runs consistent with the strategies contract: a ``schedule`` of 2 or 3 updates every
    ``gap`` generated tokens from t0, ``final_problem`` and ``answer_final``, and the metrics-row
    fields measured from the last update. Each update moves r(t) up by 1 from ``SWITCH`` tokens after
    it (multi_retract: the retraction moves it back down) and KL to P_matched decays after each.
    The first problem's run of each strategy ends 2 tokens before its last update (delivered false,
    stream_start null). Meant to be added to :func:`synthetic_records` (same
    problem ids, so the point calibrates)."""
    rng = np.random.default_rng(seed)
    records = []
    for condition in strategies:
        final, texts = STRATEGY_SCHEDULES[condition]
        for i in range(n_problems):
            pid = f"p{i:03d}"
            ts = [T0 + u * gap for u in range(len(texts))]
            n_gen = ts[-1] - 2 if i == 0 else N_GEN
            level = np.zeros(N_GEN)
            kl = np.full(N_GEN, 0.6)
            for u, t in enumerate(ts):
                if t >= n_gen:
                    break
                step = -1.0 if (condition == "multi_retract" and u == 1) else 1.0
                level[t + SWITCH - 1:] += step
                kl[t:] = 0.6 * np.exp(-0.2 * np.arange(N_GEN - t))
            after = level[T0:] + rng.normal(0, 0.2, N_GEN - T0)
            record = _record(pid, condition, point, T0, after, "single_number", "adapted",
                             float(kl[T0:min(T0 + 20, n_gen)].mean()))
            arrays = record["arrays"]
            arrays["kl"]["matched"] = kl.tolist()
            for group in ("logprob_ref", "kl"):
                arrays[group] = {name: values[:n_gen] for name, values in arrays[group].items()}
            record["tokens"]["generated"] = record["tokens"]["generated"][:n_gen]
            record["texts"]["generated_pieces"] = record["texts"]["generated_pieces"][:n_gen]
            record["stop_reason"] = "eos" if n_gen < N_GEN else "length"
            schedule, start = [], 3 + T0  # prompt tokens, then the generated ones before the first update
            for u, (t, text) in enumerate(zip(ts, texts)):
                delivered = t < n_gen
                n_tokens = len(text.split())
                schedule.append({"index": u, "t": t, "stream_start": start if delivered else None,
                                 "n_tokens": n_tokens, "text": text, "delivered": delivered})
                if delivered:
                    start += n_tokens + (ts[u + 1] - t if u + 1 < len(ts) else 0)
            delivered_ts = [s["t"] for s in schedule if s["delivered"]]
            last = delivered_ts[-1]
            record["schedule"] = schedule
            record["final_problem"] = final
            record["answer_final"] = {"a": "1", "b": "2", "c": "3"}[final]
            tail = kl[last:n_gen][:20]
            record["metrics"].update({
                "n_after": n_gen - T0, "updates_delivered": len(delivered_ts), "last_update_t": last,
                "adaptation_gap_since_last": float(tail.mean()) if tail.size else None,
                **{f"{name}_since_last": None for name in ("detection_latency", "adaptation_latency",
                                                           "adaptation_latency_kl")},
                **{f"{name}_since_last_censored": None for name in ("detection_latency", "adaptation_latency",
                                                                    "adaptation_latency_kl")},
            })
            records.append(record)
    return as_records(records)
