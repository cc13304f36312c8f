# Every target creates its own virtualenv in .venv (override with VENV=...).
# torch is installed pinned, BEFORE anything that depends on it: an unpinned torch pulls a
# multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml setup.py src/rpdetect/engine/_normal.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[export,eval,dev,serve]'
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m rpdetect.demo --workdir cache/demo

# tests/deploy also needs libopencv-dev (apt, root) and clients/node/node_modules (npm).
test: $(VENV)/.installed
	bash scripts/setup_deploy_deps.sh
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info src/rpdetect/engine/_normal*.so
