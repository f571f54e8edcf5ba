# Every target builds (once) its own virtual environment in .venv from requirements/dev.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-timm lint format bench clean

install: $(STAMP)

$(STAMP): requirements/dev.txt osgd/pyproject.toml timm_anytime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

## The main job: OSGD and the other methods on a 3-task network, offline (under a minute on 2 cores).
demo: install
	$(BIN)/python examples/osgd_multitask_digits.py

## Lint, format check, the whole test suite, and timm's own model tests on our models (what CI runs).
test: install lint
	$(BIN)/python -m pytest
	$(BIN)/python tests/timm_suite/run.py

## timm's tests/test_models.py (from the installed timm's sdist, cached in .venv) on every model we register.
test-timm: install
	$(BIN)/python tests/timm_suite/run.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/osgd_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
