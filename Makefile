# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 2

.PHONY: demo test test-slow install dev maskfaces model clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[train]"

dev: $(BIN)/python
	$(BIN)/pip install -q -e ".[train,dev,mtcnn]"

demo: install
	$(BIN)/maskcls demo

test: dev
	$(BIN)/python -m pytest -q

test-slow: dev
	$(BIN)/python -m pytest -q -m slow

maskfaces: install
	$(BIN)/python ../shared/maskfaces/build.py --out data/maskfaces

# The packaged model src/maskcls/weights/maskcls.onnx + MODEL_CARD.md (renders maskfaces if absent; configs/shipped.yaml)
model: install
	$(BIN)/python scripts/build_model.py

clean:
	rm -rf runs .cache data/demo
