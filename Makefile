# gv3lite: two commands for a new user (see README.md).
#   make main   -- the main job: the paper's ablations, quick budget -> results/quick/, figures/ (installs first if needed)
#   make test   -- the whole test suite: pytest + every notebook under nbval (installs first if needed)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= $(abspath ../shared/data/imagenette2-224)
export GV3LITE_DATA ?= $(DATA)
export OMP_NUM_THREADS ?= 2

.PHONY: install main test

install: $(VENV)/.installed

# torch/torchvision are pinned to the builds this project is developed and tested with (DEVELOPERS.md).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

main: install
	$(VENV)/bin/gv3lite reproduce --budget quick --data $(GV3LITE_DATA) --out results --figures figures

test: install
	GV3LITE_BUDGET=smoke $(VENV)/bin/python -m pytest
