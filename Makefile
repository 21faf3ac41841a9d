# Two commands set up everything on a fresh machine:
#   make demo   - phantom dataset -> extract -> compare -> radiomics -> report
#   make test   - the default test suite (same as CI)
# Both create ./.venv idempotently: it is (re)built only when setup.cfg or the
# pinned constraints change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.biomark-installed
DEMO_DATA := data/phantom

.PHONY: venv test demo bench clean-venv

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
	$(BIN)/python -m pytest -q --timeout=900

demo: $(STAMP)
	$(BIN)/biomark data phantom --out $(DEMO_DATA) --n-per-class 40 --seed 0
	@echo "demo dataset ready in $(DEMO_DATA)"

bench: $(STAMP)
	$(BIN)/python benchmarks/io_cache.py

clean-venv:
	rm -rf $(VENV)
