# gv3lite: two commands for a new user (see README.md).
#   make main    -- the main job: trains the paper's claims at the quick budget as a replicated 2^(6-2) fractional
#                   factorial (gv3lite reproduce --design factorial: blocks of 16 trainings until every claim is
#                   decided, the budget's blocks are spent or its hour would be) into the git-ignored runs/study/quick/
#                   (resumable there: run make main again) and compares it with the committed results/quick, run by
#                   run and claim by claim (runs/study/quick/reproduction.md); writes no tracked file
#   make medium  -- the same on all of Imagenette into runs/study/medium/ (resumable over sittings)
#   make test    -- the whole test suite: pytest, including every notebook run by nbval (--nbval-lax) and in JupyterLab
#                   in headless Chromium
# and for maintainers and the course:
#   make publish -- BUDGET=quick|medium: the study in runs/study/<budget>/ becomes the committed results/<budget>/, its
#                   figures and README's Results block (re-rendered from the recorded runs; refuses a study trained by
#                   other code than the current one)
#   make train   -- one GhostNetV3 training run on all of Imagenette (runs/main)
#   make book    -- the course as a static web site (Jupyter Book) in build/book/_build/html, checked in Chromium
# The one-factor-at-a-time grids (notebooks 06/07, questions outside the factorial) stay available:
#   .venv/bin/gv3lite reproduce --design ofat --budget quick --grids kd,augment --jobs 2 --out runs/ofat
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= $(abspath ../shared/data/imagenette2-224)
export GV3LITE_DATA ?= $(DATA)
export OMP_NUM_THREADS ?= 2

.PHONY: install git-filters main medium publish train test book

install: $(VENV)/.installed git-filters

# Notebook outputs never reach git (.gitattributes): nbstripout is the clean filter, and it also drops the kernel's
# Python patch version that JupyterLab writes into language_info, so a notebook opened and run compares equal.
git-filters: $(VENV)/.installed
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '$(abspath $(VENV))/bin/nbstripout --keep-id --extra-keys "metadata.language_info.version"'; \
	  git config filter.nbstripout.smudge cat; \
	  git config diff.ipynb.textconv '$(abspath $(VENV))/bin/nbstripout -t'; \
	fi

# torch/torchvision are pinned to the builds this project is developed and tested with (DEVELOPERS.md).
$(VENV)/.installed: pyproject.toml etc/jupyter/jupyter_server_config.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	mkdir -p $(VENV)/etc/jupyter && cp etc/jupyter/jupyter_server_config.py $(VENV)/etc/jupyter/
	touch $@

# the study is the factorial (gv3lite.study.design, gv3lite.budgets.FACTORIAL_BLOCKS); an interrupted call exits 130
# and says to run the same make target again (GV3LITE_RESUME), which resumes where it stopped
STUDY ?= runs/study
GV3LITE := $(VENV)/bin/gv3lite
main: install
	GV3LITE_RESUME="make main" $(GV3LITE) reproduce --design factorial --budget quick --jobs 2 --data $(GV3LITE_DATA) --out $(STUDY)
	$(GV3LITE) compare $(STUDY)/quick results/quick

# resumable: finished runs in runs/study/medium are not retrained, so it can be run over sittings
medium: install
	GV3LITE_RESUME="make medium" $(GV3LITE) reproduce --design factorial --budget medium --jobs 2 --data $(GV3LITE_DATA) --out $(STUDY)
	$(GV3LITE) compare $(STUDY)/medium results/medium

# maintainers: the study trained by `make main` (BUDGET=quick) or `make medium` becomes the committed one
BUDGET ?= quick
publish: install
	$(GV3LITE) publish --budget $(BUDGET) --study $(STUDY)

# one model: GhostNetV3-0.5x on all of Imagenette at 64 px (the trainer's defaults), then train vs deploy form
train: install
	$(VENV)/bin/gv3lite train --data $(GV3LITE_DATA) --out runs/main
	$(VENV)/bin/gv3lite eval --data $(GV3LITE_DATA) --checkpoint runs/main/last.pth

# one torch thread per process: the notebooks' kernels (nbval's and the browser test's) read OMP_NUM_THREADS
# (gv3lite.utils.set_torch_threads), and on 2 cores a 2-thread op stalls whenever another process holds a core.
# TEST_WORKERS pytest-xdist workers (one per core of CI's 2; 0: one process) share the suite: each test file goes to
# one worker whole, and every run of a notebook (nbval and the browser test) to one worker (tests/conftest.py)
TEST_WORKERS ?= 2
test: install
	GV3LITE_BUDGET=smoke OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# the course as a static HTML site: every notebook executed at BOOK_BUDGET (default smoke: 2-12 min on 2 cores;
# quick takes hours: 07 trains its grid), then every page opened in headless Chromium (tests/test_book.py)
BOOK_BUDGET ?= smoke
book: install
	rm -rf build/book
	GV3LITE_BUDGET=$(BOOK_BUDGET) OMP_NUM_THREADS=1 $(VENV)/bin/jupyter-book build notebooks --path-output build/book -W --keep-going
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests/test_book.py
	@echo "open build/book/_build/html/index.html in a browser"
