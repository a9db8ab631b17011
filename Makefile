# Two entry points: `make run` (install + status screen) and `make test` (install + everything).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint typecheck pytest lab-deps bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.run
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

run: $(VENV)/.run
	$(BIN)/oomlens

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests bench

typecheck: $(VENV)/.dev
	$(BIN)/mypy --strict src

pytest: $(VENV)/.dev lab-deps
	$(BIN)/pytest

test: lint typecheck pytest

# The kernel lab's tools (QEMU, busybox-static, cpio) and Debian's kernel package;
# see tests/lab/README.md. Never fails: the lab tests skip with the reason instead.
lab-deps: $(BIN)/python
	@$(BIN)/python tests/lab/labdeps.py

bench: $(VENV)/.dev
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
