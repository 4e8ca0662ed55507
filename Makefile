# Two commands on a fresh clone: `make run` (Split MNIST end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The Ray launcher pins cloudpickle<3, which joblib>=1.6 (the joblib launcher's) cannot use,
# so it lives in an environment of its own, used by `make test-ray`.
RAY_VENV ?= .venv-ray
# Data root: the shared folder beside the checkout when present, else ./data (downloaded).
CL_BAYES_DATA ?= $(if $(wildcard ../shared/data/MNIST),$(abspath ../shared/data),$(abspath data))
export CL_BAYES_DATA

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev,joblib,submitit]'
	touch $@

$(RAY_VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(RAY_VENV)
	$(RAY_VENV)/bin/pip install --quiet -e '.[dev,ray]'
	touch $@

.PHONY: install install-ray run test test-ray lint bench
install: $(VENV)/.installed

install-ray: $(RAY_VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/python -m cl_bayes task=split_mnist $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q $(ARGS)

# The Ray launcher's tests, in its own environment (skipped by `make test`).
test-ray: $(RAY_VENV)/.installed
	@$(RAY_VENV)/bin/python -c "import hydra_plugins.hydra_ray_launcher" 2>/dev/null || { \
	  echo "make test-ray: the Ray launcher does not import in $(RAY_VENV): rm -rf $(RAY_VENV) and retry"; \
	  exit 1; }
	$(RAY_VENV)/bin/python -m pytest -q tests/test_launchers.py -k ray $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check cl_bayes tests benchmarks setup.py

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/finetune_epoch.py
	$(VENV)/bin/python benchmarks/vcl_epoch.py
	$(VENV)/bin/python benchmarks/split_mnist_protocol.py
