# The two commands a new user needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/driftwarden demo

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy on the package and the load generator (settings in pyproject.toml).
# TEMPORARY: core/ (made strict by the core work) and monitor/ (reworked by the state-protocol work)
# are type-checked silently until those branches land; drop the two options then.
typecheck: $(STAMP)
	$(BIN)/mypy --exclude '^services/driftwarden/(core|monitor)/' --follow-imports=silent

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .driftwarden .pytest_cache .ruff_cache .mypy_cache
