# Two entry points on a fresh clone with only Python 3 present:
#   make run   [ARGS="--headless --input clip.mp4 --avatar me.png"]   the live app on the bundled model
#   make test                                                          the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(1)

.PHONY: run test bench clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0   # the CPU wheel; unpinned torch pulls several GB of CUDA

$(VENV)/.installed-live: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e ".[live]"
	$(PY) -m fomm_model.face_detection --fetch
	$(PY) -m fomm_model.evaluation.landmarks --fetch
	touch $@

$(VENV)/.installed-test: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m fomm_model.face_detection --fetch
	$(PY) -m fomm_model.training.perceptual --fetch
	$(PY) -m fomm_model.evaluation.landmarks --fetch
	touch $@

run: $(VENV)/.installed-live
	$(PY) main.py $(ARGS)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(PY) -m benchmarks.run_all

clean-venv:
	rm -rf $(VENV)
