"""Loaders on the real datasets: record counts and known bad ids, exactly."""


import pytest
from real_data import REAL_DATA

from measure.data import check_pair, load_pairs, load_records

pytestmark = pytest.mark.skipif(not (REAL_DATA / "mawps").is_dir(),
                                reason=f"real datasets not found at {REAL_DATA} (set MEASURE_DATA_DIR)")

MAWPS_MISMATCH = {67, 125, 231, 342, 370, 615, 756, 1138, 1543, 1556, 1592, 1679, 1689, 1767, 2185, 2234, 2250, 2286}
MAWPS_TO_SOLVE = {19, 69, 366, 497, 787, 829, 1017, 1023, 1124, 1350, 1466, 1655, 1921, 1986, 1990, 2201, 2276, 2290, 2360}
MAWPS_ROUNDED = {98, 102, 124, 146, 150, 326, 350, 371, 397, 422, 440, 508, 513, 608, 654, 667, 794, 886, 961, 991, 999,
                 1044, 1056, 1115, 1185, 1247, 1391, 1491, 1515, 1724, 1816, 1876, 2062, 2143, 2173, 2217, 2226, 2362, 2365}


def _ids(prefix, numbers):
    return sorted(f"{prefix}{n}" for n in numbers)


def test_mawps_counts_and_known_bad_ids():
    records, report = load_records("mawps", REAL_DATA)
    assert report.total == 2373
    assert report.rejected["malformed_equation"] == ["mawps_603"]
    assert sorted(report.rejected["answer_mismatch"]) == _ids("mawps_", MAWPS_MISMATCH)
    assert report.rejected["duplicate_conflicting_answer"] == ["mawps_1065", "mawps_1911"]
    # 377 records share 185 texts: 192 repeats, 2 of them the conflicting pair above (both dropped).
    assert len(report.rejected["duplicate_text"]) == 190
    assert sorted(report.flagged["equation_to_solve"]) == _ids("mawps_", MAWPS_TO_SOLVE)
    assert sorted(report.flagged["answer_rounded"]) == _ids("mawps_", MAWPS_ROUNDED)
    assert report.kept == len(records) == 2373 - 1 - 18 - 2 - 190
    assert {r.id for r in records}.isdisjoint({"mawps_603", "mawps_1065", "mawps_1911"})


def test_svamp_drops_chal_680_only():
    records, report = load_records("svamp", REAL_DATA)
    assert (report.total, report.kept, len(records)) == (1000, 999, 999)
    assert report.rejected == {"answer_mismatch": ["svamp_chal_680"]}
    with_codes = [r for r in records if r.metadata["variation_codes"]]
    assert len(with_codes) == 942  # rows the README says link to a SVAMP.json ID (chal-680 is not one)


def test_gsm8k_counts_and_rebuilt_equations():
    records, report = load_records("gsm8k", REAL_DATA)
    assert (report.total, len(records)) == (1319, 1319)
    without = [r for r in records if r.equation is None]
    assert len(without) == sum(report.flagged_counts.values())
    assert len(without) < 400  # most solutions give one equation


def test_fairytaleqa_counts():
    records, report = load_records("fairytaleqa", REAL_DATA)
    assert report.total == 1007 + 1025
    assert report.rejected_counts == {"multi_section": 182}
    assert len(records) == 2032 - 182 and all(r.context for r in records)


def test_nq_open_counts():
    records, report = load_records("nq_open", REAL_DATA)
    assert (report.total, len(records), report.rejected) == (3610, 3610, {})


@pytest.mark.parametrize("dataset", ["fairytaleqa", "nq_open"])
def test_qa_pairs_are_valid_and_deterministic(dataset):
    pairs = load_pairs(dataset, REAL_DATA, limit=60, seed=3)
    assert len(pairs) == 60 and not [p.id for p in pairs if check_pair(p)]
    assert {p.variation_type for p in pairs} == {"question_switch", None}
    assert pairs == load_pairs(dataset, REAL_DATA, limit=60, seed=3)
    if dataset == "fairytaleqa":
        assert all(p.context for p in pairs)


def test_mawps_500_pairs_all_pass_check_pair():
    pairs = load_pairs("mawps", REAL_DATA, limit=500, seed=0)
    assert len(pairs) == 500
    assert {p.id: check_pair(p) for p in pairs if check_pair(p)} == {}
    counts = {t: sum(p.variation_type == t for p in pairs) for t in ("single_number", "multi_number", "added_step", None)}
    assert counts == {"single_number": 125, "multi_number": 125, "added_step": 125, None: 125}


@pytest.mark.parametrize("dataset", ["svamp", "gsm8k"])
def test_other_math_sources_augment_cleanly(dataset):
    pairs = load_pairs(dataset, REAL_DATA, limit=80, seed=1)
    assert len(pairs) == 80 and not [p.id for p in pairs if check_pair(p)]


def test_data_dir_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("MEASURE_DATA_DIR", str(REAL_DATA))
    assert len(load_pairs("svamp", limit=4)) == 4
