# Alignment Dynamics: two commands do everything (see README.md).
#   make book   create/refresh .venv, execute every chapter, render _build/html
#   make test   every test: the library tier, a smoke build of the whole book, nbval, browser check
#   (make test-fast: the library tier only, pytest -m "not book")
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= fast
BUILD_DIR ?= _build
# The model packages and their pins are listed once, in lib/alignment_dynamics/packages.py.
PACKAGES_PY := lib/alignment_dynamics/packages.py
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile $(PACKAGES_PY) | sha256sum | cut -c1-16)
export PYTHONHASHSEED := 0
# The library of this checkout wins over any other install (editable installs of other worktrees).
export PYTHONPATH := $(CURDIR)/lib
export JUPYTER_PATH := $(abspath $(VENV))/share/jupyter

.PHONY: help venv model-packages book chapter test test-fast clean clean-cache

help:
	@echo "make book                          build the whole book (profile fast) into $(BUILD_DIR)/html"
	@echo "make book PROFILE=full             ... at paper scale"
	@echo "make chapter NAME=x ARGS='-p K V'  re-run one chapter with overrides into $(BUILD_DIR)/chapters/x"
	@echo "make test                          run every test (what CI runs)"
	@echo "make test-fast                     the library tests only (no book build), for development"
	@echo "make model-packages                reinstall the model packages (pins: $(PACKAGES_PY))"
	@echo "make clean                         remove $(BUILD_DIR) (the user cache stays)"

venv: $(STAMP)

# The venv records the checkout it is bound to (its editable install and kernel.json point there):
# `make` in another checkout that shares it refuses to rebind it silently (REBIND=1 to rebind).
CHECKOUT_FILE := $(VENV)/.checkout

$(STAMP): pyproject.toml Makefile $(PACKAGES_PY)
	@if [ -f "$(CHECKOUT_FILE)" ] && [ "$$(cat $(CHECKOUT_FILE))" != "$(CURDIR)" ] && [ -z "$(REBIND)" ]; then \
	  echo "error: the venv $(abspath $(VENV)) belongs to the checkout $$(cat $(CHECKOUT_FILE)), not $(CURDIR);" \
	       "refusing to rebind its editable install and kernel. Use your own (VENV=...), or rebind it with REBIND=1." >&2; \
	  exit 2; fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[book,test]'
	$(PY) -m alignment_dynamics.packages --install
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" > /dev/null
	@echo "$(CURDIR)" > $(CHECKOUT_FILE)
	@echo "$(CURDIR)" > $@
	@echo "environment ready: $(VENV) ($$(du -sh $(VENV) | cut -f1))"

# (Re)install the model packages alone, e.g. after changing a pin in $(PACKAGES_PY).
model-packages:
	$(PY) -m alignment_dynamics.packages --install

book: $(STAMP)
	$(PY) -m alignment_dynamics.build --profile $(PROFILE) --build-dir $(BUILD_DIR)

chapter: $(STAMP)
	@test -n "$(NAME)" || { echo "usage: make chapter NAME=<chapter> [PROFILE=fast] [ARGS='-p NAME VALUE ...']"; \
	  $(PY) -m alignment_dynamics.build --list; exit 2; }
	$(PY) -m alignment_dynamics.build --profile $(PROFILE) --build-dir $(BUILD_DIR) --chapter $(NAME) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest tests

# The library tier only: every test not marked `book` (no book build, no nbval, no browser), for development.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not book" tests

clean:
	rm -rf $(BUILD_DIR)

clean-cache:
	$(PY) -c "import alignment_dynamics.cache as c, shutil; shutil.rmtree(c.user_cache_dir())"
