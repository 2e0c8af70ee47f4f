# gv3lite: two commands for a new user (see README.md).
#   make main   -- the main job: the paper's ablations, quick budget -> results/quick/, figures/ (installs first if needed)
#   make medium -- the same on all of Imagenette, 3 seeds -> results/medium/, figures/medium/ (~2.5 h; resumable)
#   make train  -- one GhostNetV3 training run on all of Imagenette (runs/main)
#   make test   -- the whole test suite: pytest + every notebook under nbval (installs first if needed)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= $(abspath ../shared/data/imagenette2-224)
export GV3LITE_DATA ?= $(DATA)
export OMP_NUM_THREADS ?= 2

.PHONY: install main medium train test

install: $(VENV)/.installed

# torch/torchvision are pinned to the builds this project is developed and tested with (DEVELOPERS.md).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

main: install
	$(VENV)/bin/gv3lite reproduce --budget quick --jobs 2 --data $(GV3LITE_DATA) --out results --figures figures

# resumable: finished runs recorded in results/medium/runs.csv are not retrained, so it can be run over sittings
medium: install
	$(VENV)/bin/gv3lite reproduce --budget medium --jobs 2 --data $(GV3LITE_DATA) --out results --figures figures/medium

# one model: GhostNetV3-0.5x on all of Imagenette at 64 px (the trainer's defaults), then train vs deploy form
train: install
	$(VENV)/bin/gv3lite train --data $(GV3LITE_DATA) --out runs/main
	$(VENV)/bin/gv3lite eval --data $(GV3LITE_DATA) --checkpoint runs/main/last.pth

test: install
	GV3LITE_BUDGET=smoke $(VENV)/bin/python -m pytest
