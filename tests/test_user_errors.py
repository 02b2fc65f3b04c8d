"""Every user error is one line ``measure <command>: error: ...`` naming the input, exit code 2.

The table below is the record of which bad inputs are covered: one row per input (the command
line, the files it needs, the environment), the fragment the message must contain, and whether
the model may be loaded before the error (only the context-length check needs it). Adding a case
is adding a row. The CLI runs in-process (``measure.cli.main``); ``{tmp}`` in an argument is the
test's folder, which is also the working directory.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pytest

from measure import cli
from measure.data import load_builtin
from measure.run import runner

GOOD_PAIR = load_builtin()[0].to_dict()


def pairs_file(**changes) -> str:
    return json.dumps({**GOOD_PAIR, **changes}) + "\n"


STORY = {"story_name": "s", "sections": [{"section": "1", "text": "Once upon a time."}],
         "questions": [{"question": "Who?", "cor_section": "1", "answer1": "a king", "question_id": "q1"}]}
METRICS = {"aggregate_pooled": [{"condition": "injection", "variation_type": None, "point": "t8",
                                 "metric": "adaptation_gap", "aggregation": "mean", "estimate": 0.1, "n": 3}],
           "checks": {"full_recompute_max_kl": {"max": 1e-7}}}


@dataclass
class Case:
    id: str
    argv: list[str]
    fragment: str
    files: dict = field(default_factory=dict)  # relative path -> str or bytes
    env: dict = field(default_factory=dict)
    model: bool = False  # the model may load before this error (checked against its context)


TINY = ["--model", "tiny:llama", "--limit", "1", "--max-new-tokens", "12", "--points", "3", "--no-semantic",
        "--quiet"]
RUN = ["run", *TINY, "--out", "{tmp}/out"]

CASES = [
    # -- flags: types, ranges, names, non-finite numbers
    Case("points-inf", [*RUN, "--points", "inf"], "injection point 'inf' is not a finite number"),
    Case("points-nan", [*RUN, "--points", "nan"], "injection point 'nan' is not a finite number"),
    Case("points-zero", [*RUN, "--points", "0"], "--points: injection point 0 must be a positive whole number"),
    Case("points-words", [*RUN, "--points", "early"], "injection point 'early' is neither"),
    Case("temperature-nan", [*RUN, "--temperature", "nan"], "--temperature nan: expected a finite number"),
    Case("temperature-negative", [*RUN, "--temperature", "-1"], "--temperature must be at least 0 (0 is greedy)"),
    Case("alpha-out-of-range", [*RUN, "--alpha", "2"], "--alpha 2.0"),
    Case("alpha-inf", [*RUN, "--alpha", "inf"], "--alpha inf: expected a finite number"),
    Case("limit-zero", [*RUN, "--limit", "0"], "--limit must be at least 1"),
    Case("batch-size-zero", [*RUN, "--batch-size", "0"], "--batch-size must be at least 1"),
    Case("partial-zero", [*RUN, "--partial-recompute-last", "0"], "--partial-recompute-last must be at least 1"),
    Case("update-gap-zero", [*RUN, "--update-gap", "0"], "--update-gap must be at least 1"),
    Case("gradual-one-piece", [*RUN, "--gradual-pieces", "1"], "--gradual-pieces must be at least 2"),
    Case("unknown-condition", [*RUN, "--conditions", "injecton"], "unknown condition"),
    Case("unknown-dtype", [*RUN, "--dtype", "float8"], "--dtype 'float8'"),
    Case("unknown-device", [*RUN, "--device", "tpu"], "--device 'tpu'"),
    Case("unknown-dataset", [*RUN, "--dataset", "nope"], "--dataset 'nope'"),
    Case("resume-without-out", ["run", "--resume"], "--resume needs --out"),
    Case("int-flag-not-int", [*RUN, "--batch-size", "one"], "argument --batch-size: invalid int value: 'one'"),
    Case("limit-not-a-count", [*RUN, "--limit", "one"], "argument --limit: 'one': a whole number or 'all'"),
    # -- TOML: the same typed settings as the flags, with file and line
    Case("toml-int-as-text", ["run", "--config", "{tmp}/r.toml"], "r.toml, line 2: limit = 'one': expected a whole number",
         files={"r.toml": '[run]\nlimit = "one"\n'}),
    Case("toml-bool-as-text", ["run", "--config", "{tmp}/r.toml"], "line 3: attention = 'no': expected true or false",
         files={"r.toml": '[run]\nmodel = "tiny:llama"\nattention = "no"\n'}),
    Case("toml-list-as-number", ["run", "--config", "{tmp}/r.toml"], "points = 5: expected a list",
         files={"r.toml": "points = 5\n"}),
    Case("toml-text-as-number", ["run", "--config", "{tmp}/r.toml"], "model = 7: expected text",
         files={"r.toml": "model = 7\n"}),
    Case("toml-float-nan", ["run", "--config", "{tmp}/r.toml"], "temperature = nan: expected a finite number",
         files={"r.toml": "temperature = nan\n"}),
    Case("toml-unknown-key", ["run", "--config", "{tmp}/r.toml"], "line 1: unknown setting 'modle'",
         files={"r.toml": "modle = 'x'\n"}),
    Case("toml-syntax", ["run", "--config", "{tmp}/r.toml"], "invalid TOML", files={"r.toml": "limit = = 3\n"}),
    Case("toml-not-utf8", ["run", "--config", "{tmp}/r.toml"], "line 2: not UTF-8 text (byte 0xff)",
         files={"r.toml": b"[run]\nmodel = '\xff'\n"}),
    Case("toml-missing", ["run", "--config", "{tmp}/nope.toml"], "settings file not found"),
    Case("toml-run-not-table", ["run", "--config", "{tmp}/r.toml"], "[run] must be a table",
         files={"r.toml": "run = 5\n"}),
    Case("toml-bad-value-after-type", ["run", "--config", "{tmp}/r.toml", "--model", "tiny:llama"],
         "unknown condition(s) teleport", files={"r.toml": 'conditions = "injection,teleport"\n'}),
    # -- model paths
    Case("model-missing-path", [*RUN, "--model", "/path/that/is/not/a/model"], "no such model file or folder"),
    Case("model-missing-gguf", [*RUN, "--model", "{tmp}/nothing.gguf"], "GGUF file not found"),
    Case("model-not-gguf", [*RUN, "--model", "{tmp}/fake.gguf"], "is not a GGUF file",
         files={"fake.gguf": "this is a text file\n"}),
    # A file named .gguf that begins with "GGUF" and then text: transformers' reader raised a ValueError.
    Case("model-gguf-text", [*RUN, "--model", "{tmp}/fake.gguf"], "fake.gguf is not a GGUF file this reader can load",
         files={"fake.gguf": "GGUF not really a model\n"}),
    Case("bench-model-gguf-text", ["bench", "--model", "{tmp}/fake.gguf", "--problems", "1"],
         "fake.gguf is not a GGUF file this reader can load", files={"fake.gguf": "GGUF not really a model\n"}),
    Case("bench-model-not-gguf", ["bench", "--model", "{tmp}/fake.gguf"], "is not a GGUF file",
         files={"fake.gguf": "this is a text file\n"}),
    # A GGUF v3 header over a body cut short: the reader fails inside the conversion.
    Case("model-gguf-truncated", [*RUN, "--model", "{tmp}/cut.gguf"], "cut.gguf could not be read as a GGUF model",
         files={"cut.gguf": b"GGUF\x03\x00\x00\x00" + (5).to_bytes(8, "little") + (2).to_bytes(8, "little") + b"\x01"},
         env={"MEASURE_CACHE_DIR": "{tmp}/cache"}, model=True),
    Case("model-folder-without-weights", [*RUN, "--model", "{tmp}/empty-model/"], "holds no *.safetensors",
         files={"empty-model/config.json": "{}"}, model=True),
    # -- data files: file, line (or item) and field
    Case("pairs-answers-not-a-list", [*RUN, "--dataset", "{tmp}/p.jsonl"], "line 1, field 'answers_a': expected a list",
         files={"p.jsonl": pairs_file(answers_a="Paris")}),
    Case("pairs-not-utf8", [*RUN, "--dataset", "{tmp}/p.jsonl"], "p.jsonl, line 2: not UTF-8 text: byte 0xe9",
         files={"p.jsonl": pairs_file().encode() + b'{"Question": "caf\xe9"}\n'}),
    Case("pairs-array-not-utf8", [*RUN, "--dataset", "{tmp}/p.json"], "p.json, line 1: not UTF-8 text",
         files={"p.json": b'[{"Question": "caf\xe9"}]'}),
    Case("pairs-bad-json", [*RUN, "--dataset", "{tmp}/p.jsonl"], "line 2: invalid JSON",
         files={"p.jsonl": pairs_file() + "{not json\n"}),
    Case("pairs-context-not-text", [*RUN, "--dataset", "{tmp}/p.jsonl"], "field 'context': expected text",
         files={"p.jsonl": pairs_file(context=["a", "b"])}),
    Case("pairs-answer-list-item", [*RUN, "--dataset", "{tmp}/p.jsonl"], "field 'answers_b': answer 2",
         files={"p.jsonl": pairs_file(answers_b=["12", None])}),
    Case("pairs-folder", [*RUN, "--dataset", "{tmp}/p.jsonl"], "a folder, not a file", files={"p.jsonl/x": ""}),
    Case("fairytale-section-text", [*RUN, "--dataset", "fairytaleqa", "--data-dir", "{tmp}/d"],
         "test.jsonl, line 1, field 'sections': section 1: 'text' must be text",
         files={"d/fairytaleqa/test.jsonl": json.dumps({**STORY, "sections": [{"section": "1", "text": 5}]}) + "\n",
                "d/fairytaleqa/val.jsonl": ""}),
    Case("fairytale-section-shape", [*RUN, "--dataset", "fairytaleqa", "--data-dir", "{tmp}/d"],
         "field 'sections': section 1: each section needs",
         files={"d/fairytaleqa/test.jsonl": json.dumps({**STORY, "sections": ["text"]}) + "\n",
                "d/fairytaleqa/val.jsonl": ""}),
    Case("fairytale-answer-type", [*RUN, "--dataset", "fairytaleqa", "--data-dir", "{tmp}/d"],
         "question 1: 'answer1' must be text",
         files={"d/fairytaleqa/test.jsonl": json.dumps(
             {**STORY, "questions": [{**STORY["questions"][0], "answer1": ["a"]}]}) + "\n",
                "d/fairytaleqa/val.jsonl": ""}),
    Case("fairytale-not-utf8", [*RUN, "--dataset", "fairytaleqa", "--data-dir", "{tmp}/d"],
         "test.jsonl, line 1: not UTF-8 text: byte 0xff",
         files={"d/fairytaleqa/test.jsonl": b"\xff\n", "d/fairytaleqa/val.jsonl": ""}),
    Case("data-dir-missing", [*RUN, "--dataset", "mawps", "--data-dir", "{tmp}/nope"], "data folder"),
    # -- environment variables
    Case("env-data-dir-missing", [*RUN, "--dataset", "mawps"], "$MEASURE_DATA_DIR names",
         env={"MEASURE_DATA_DIR": "{tmp}/no-such-folder"}),
    Case("env-cache-under-a-file", ["run", "--out", "{tmp}/out"], "$MEASURE_CACHE_DIR",
         files={"a-file": "x"}, env={"MEASURE_CACHE_DIR": "{tmp}/a-file/cache"}),
    Case("env-cache-is-a-file", ["run", "--out", "{tmp}/out"], "is a file, not a folder",
         files={"a-file": "x"}, env={"MEASURE_CACHE_DIR": "{tmp}/a-file"}),
    Case("env-cpu-linear-unknown", [*RUN], "$MEASURE_CPU_LINEAR='mkl': unknown linear kernel",
         env={"MEASURE_CPU_LINEAR": "mkl"}),
    # -- run folders
    Case("out-is-a-file", [*RUN[:-1], "{tmp}/a-file"], "a-file is not a writable folder", files={"a-file": "x"}),
    Case("out-not-a-run", [*RUN[:-1], "{tmp}/mine"], "pass --force", files={"mine/metrics.json": "{}"}),
    Case("out-holds-records", RUN, "samples.jsonl already exists: pass --resume", files={"out/samples.jsonl": ""}),
    Case("resume-nothing", ["run", "--out", "{tmp}/out", "--resume"], "holds no run to resume"),
    Case("resume-without-run-json", ["run", "--out", "{tmp}/out", "--resume"], "has no run.json",
         files={"out/samples.jsonl": ""}),
    Case("resume-corrupt-run-json", ["run", "--out", "{tmp}/out", "--resume"], "run.json is corrupt (line 1",
         files={"out/run.json": '{"settings": {"model": '}),
    Case("resume-run-json-bad-type", ["run", "--out", "{tmp}/out", "--resume"], "settings: limit = 'x'",
         files={"out/run.json": '{"settings": {"limit": "x"}}'}),
    # -- checked once the model is loaded, before decoding
    Case("context-too-long", [*RUN, "--max-new-tokens", "1100"],
         "prompt", model=True),
    # -- compare, report, augment, data
    Case("compare-unknown-condition", ["compare", "{tmp}/a", "{tmp}/a", "--fail", "injecton/adaptation_gap.mean:+0"],
         "unknown condition 'injecton'; the runs have injection", files={"a/metrics.json": json.dumps(METRICS)}),
    Case("compare-unknown-metric", ["compare", "{tmp}/a", "{tmp}/a", "--fail", "adaptation_gapp.mean:+0"],
         "did you mean adaptation_gap", files={"a/metrics.json": json.dumps(METRICS)}),
    Case("compare-metric-not-in-runs", ["compare", "{tmp}/a", "{tmp}/a", "--fail", "kl_matched_short.mean:+0"],
         "is in neither run's summary; they have adaptation_gap", files={"a/metrics.json": json.dumps(METRICS)}),
    Case("compare-unknown-check", ["compare", "{tmp}/a", "{tmp}/a", "--max-check", "full_recompute_kl:1e-5"],
         "no check 'full_recompute_kl' in the new run; it has full_recompute_max_kl",
         files={"a/metrics.json": json.dumps(METRICS)}),
    Case("compare-missing-run", ["compare", "{tmp}/a", "{tmp}/b"], "neither metrics.json nor samples.jsonl",
         files={"a/metrics.json": json.dumps(METRICS)}),
    Case("report-missing", ["report", "{tmp}/nope"], "samples.jsonl not found"),
    Case("report-corrupt-record", ["report", "{tmp}/r"], "samples.jsonl:1: corrupt record",
         files={"r/samples.jsonl": '{"key": 1\n{"key": "a"}\n'}),
    Case("report-not-utf8", ["report", "{tmp}/r"], "samples.jsonl:1: corrupt record",
         files={"r/samples.jsonl": b'{"key": "\xff"}\n{"key": "a"}\n'}),
    Case("augment-out-folder", ["augment", "--source", "mawps", "--out", "{tmp}/d"], "is a folder",
         files={"d/x": ""}),
    Case("augment-n-zero", ["augment", "--source", "mawps", "--n", "0", "--out", "{tmp}/p.jsonl"], "--n 0"),
    Case("augment-data-missing", ["augment", "--source", "mawps", "--data-dir", "{tmp}/nope", "--out", "{tmp}/p.jsonl"],
         "data folder"),
    Case("data-check-not-utf8", ["data", "check", "{tmp}/p.jsonl"], "not UTF-8",
         files={"p.jsonl": b"\xff\n"}),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MEASURE_DATA_DIR", raising=False)
    # main() configures logging once per process; a handler bound to an earlier test's captured
    # stream would print "--- Logging error ---" tracebacks into this one.
    monkeypatch.setattr(logging.root, "handlers", [])
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_user_error_is_one_line_and_exit_code_2(case: Case, workdir, monkeypatch, capsys):
    tmp = str(workdir)
    for name, content in case.files.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{tmp}", tmp), encoding="utf-8")
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", tmp))
    if not case.model:
        monkeypatch.setattr(runner, "load_model", lambda *a, **k: pytest.fail("the model loaded before the error"))
    argv = [arg.replace("{tmp}", tmp) for arg in case.argv]
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " ", "WARNING"))]
    command = " ".join(argv[:2]) if argv[0] == "data" else argv[0]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"measure {command}: error: "), err
    assert case.fragment in lines[0], err


def test_context_length_message_names_the_problem_and_the_lengths(workdir, capsys):
    assert cli.main([*RUN, "--max-new-tokens", "1100"]) == 2
    err = capsys.readouterr().err
    assert "problem builtin_" in err and "+ --max-new-tokens 1100 =" in err
    assert "beyond the 1024-token context of model tiny:llama" in err  # tiny.py: max_position_embeddings=1024
    assert not (workdir / "out").exists()  # refused before writing: nothing left behind
