# Two commands on a fresh clone: `make run` (Split MNIST end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# Data root: the shared folder beside the checkout when present, else ./data (downloaded).
CL_BAYES_DATA ?= $(if $(wildcard ../shared/data/MNIST),$(abspath ../shared/data),$(abspath data))
export CL_BAYES_DATA

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install run test lint bench
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/python -m cl_bayes task=split_mnist $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check cl_bayes tests benchmarks

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/finetune_epoch.py
