# medrec: make demo | make test | make check | make install | make bench | make fuzz | make publish-demo
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo publish-demo test test-fast check bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# writes only into medrec-demo/ (git-ignored): the checkout stays clean
demo: $(STAMP)
	$(BIN)/medrec demo -o medrec-demo

# refreshes the committed example report (reports/demo, tracked: review and commit the change on
# purpose); the figures differ slightly from machine to machine (CPU numerics)
publish-demo: $(STAMP)
	$(BIN)/medrec demo -o medrec-demo --publish reports/demo

# best effort: installs the Debian packages of the PACS tests (tests/pacs), which skip without them
test: $(STAMP)
	-@bash scripts/install-pacs-deps.sh
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# lint (ruff, rules in pyproject.toml) and type-check (mypy: the strictly typed modules listed in
# pyproject.toml's [tool.mypy] files)
check: $(STAMP)
	$(BIN)/ruff check medrec tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# the reader fuzz harness with many more examples than CI runs (MEDREC_FUZZ_EXAMPLES per test), from a
# new seed each time (MEDREC_FUZZ_SEED=N repeats a run)
fuzz: $(STAMP)
	@seed=$${MEDREC_FUZZ_SEED:-$$(date +%s)}; echo "MEDREC_FUZZ_SEED=$$seed"; \
	MEDREC_FUZZ_SEED=$$seed MEDREC_FUZZ_EXAMPLES=$${MEDREC_FUZZ_EXAMPLES:-2000} \
	$(BIN)/python -m pytest -q tests/reliability/test_fuzz.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
