# Every target builds (once) its own virtual environment in .venv from requirements/dev.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist): one per core, at most 4 (each imports torch and timm); 0 runs the
# suite in this process (for pdb), e.g. `make test TEST_WORKERS=0`.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1))")

.PHONY: install demo demo-cifar demo-osgd test test-timm lint format bench clean

install: $(STAMP)

$(STAMP): requirements/dev.txt osgd/pyproject.toml timm_anytime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

## The main job, offline: OSGD vs SGD vs the Oracle on a width-nested anytime ResNet, scikit-learn's
## digits; trains, evaluates, writes runs/digits/report (about 1 minute on 2 CPU cores).
demo: install
	$(BIN)/python examples/anytime_compare.py --output runs/digits

## The same on CIFAR-10 from an ImageFolder tree, at CPU scale (a subset, a short schedule).
CIFAR ?= ../shared/datasets/cifar10
demo-cifar: install
	$(BIN)/python examples/anytime_compare.py --config examples/configs/cifar10_cpu_resnet20_w124.yaml \
		--data-dir $(CIFAR) --seeds 0 --output runs/cifar10_cpu

## The osgd package alone: every combination method on a 3-task MLP (under a minute).
demo-osgd: install
	$(BIN)/python examples/osgd_multitask_digits.py

## Lint, format check, type check (osgd), the whole test suite, and timm's own model tests on our models (what CI runs).
test: install lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)
	$(BIN)/python tests/timm_suite/run.py --workers $(TEST_WORKERS)

## timm's tests/test_models.py (from the installed timm's sdist, cached in .venv) on every model we register.
test-timm: install
	$(BIN)/python tests/timm_suite/run.py --workers $(TEST_WORKERS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/osgd_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
