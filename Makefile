# Two commands set up everything on a fresh machine:
#   make demo   - phantom dataset -> extract -> compare -> radiomics -> report
#   make test   - ruff (lint, format check) then the default test suite (same as CI), on 2 pytest-xdist workers
#   make typecheck - mypy on the package (settings in pyproject.toml); CI runs it before make test
# Both create ./.venv idempotently: it is (re)built only when setup.cfg or the
# pinned constraints change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.biomark-installed
QUICK_RUN := runs/quick
QUICK_DATA := data/phantom_quick
# Folds the demo trains side by side, each in its own worker process with TensorFlow's default
# threads (one per core, as a fold trained alone: the same weights to the bit). One fold at a
# time left about half of the second core idle; two at a time took the demo's 9 folds 390 s
# instead of 479 s on a 2-core AMD EPYC (benchmarks/RESULTS.md). Each worker trains its folds
# one after another in one job process (biomark.pipelines.job_process), which held at most
# 2.2 GB in the demo. `make demo DEMO_WORKERS=1` trains one fold at a time.
DEMO_WORKERS ?= 2

.PHONY: venv test typecheck demo bench clean-venv

$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	# Everything pinned by requirements/constraints.txt. pyradiomics comes from
	# the maintained fork `pyradiomics-bhklab` (same `radiomics` module), which
	# builds on Python 3.11 with numpy 2; PyPI's `pyradiomics` sdist would need
	# numpy + versioneer pre-installed and --no-build-isolation.
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[all,test]'
	@touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check biomark tests benchmarks
	$(BIN)/ruff format --check biomark tests benchmarks
	$(BIN)/python -m pytest -q --timeout=900 -n 2 --dist loadfile --no-loadscope-reorder

# Kept out of `make test`, whose time budget is tight; .ci/run calls both.
typecheck: $(STAMP)
	$(BIN)/python -m mypy

# The quick plan generates the phantom into $(QUICK_DATA) on first use, trains
# three strategies under 3-fold CV, then compares them and relates them to radiomics.
demo: $(STAMP)
	$(BIN)/biomark extract --plan analyses/quick.yaml --scheduler local:$(DEMO_WORKERS)
	$(BIN)/biomark compare --run $(QUICK_RUN) --all
	$(BIN)/biomark radiomics --data $(QUICK_DATA) --run $(QUICK_RUN) --region zones --jobs -1
	$(BIN)/biomark report --run $(QUICK_RUN)

bench: $(STAMP)
	for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
