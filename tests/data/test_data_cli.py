"""`measure augment` and `measure data` through register() on a local parser."""

import argparse
from pathlib import Path

import pytest
from real_data import REAL_DATA

from measure.data import check_pair, read_pairs
from measure.data.cli import register

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "data"


def _run(argv):
    parser = argparse.ArgumentParser(prog="measure")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real datasets not found at {REAL_DATA}")
def test_augment_writes_500_valid_mawps_pairs(tmp_path, capsys):
    out = tmp_path / "mawps.jsonl"
    assert _run(["augment", "--source", "mawps", "--data-dir", str(REAL_DATA), "--n", "500",
                 "--seed", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "single_number: 125" in printed and "control: 125" in printed and "rejected source problems:" in printed
    pairs = read_pairs(out)
    assert len(pairs) == 500 and not [p.id for p in pairs if check_pair(p)]
    assert _run(["data", "check", str(out)]) == 0


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real datasets not found at {REAL_DATA}")
def test_augment_mix(tmp_path, capsys):
    out = tmp_path / "svamp.jsonl"
    assert _run(["augment", "--source", "svamp", "--data-dir", str(REAL_DATA), "--n", "20",
                 "--out", str(out), "--mix", "added_step=3,control=1"]) == 0
    types = [p.variation_type for p in read_pairs(out)]
    assert (types.count("added_step"), types.count(None)) == (15, 5)


def test_data_check_builtin_and_list(capsys):
    assert _run(["data", "check", "builtin"]) == 0
    assert _run(["data", "list"]) == 0
    assert "mawps/mawps.jsonl" in capsys.readouterr().out


def test_data_check_reports_bad_file(capsys):
    assert _run(["data", "check", str(FIXTURES / "pairs_missing_answer.jsonl")]) == 2
    assert "line 2" in capsys.readouterr().err
