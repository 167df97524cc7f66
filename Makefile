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
	$(BIN)/pip install -q -e ".[train,dev,mtcnn,scenes]"

# The main job on a built-in default: the shipped model checks every face of the sample photos (a public-domain
# portrait with masks drawn on, made on the spot; no data, no training, no torch): faces.csv and annotated copies in runs/demo/. `maskcls demo` trains a model on drawn data.
demo: $(BIN)/python
	$(BIN)/pip install -q -e ".[serve,scenes]"
	$(BIN)/python -m maskcls.data.samples data/samples
	$(BIN)/maskcls predict --source data/samples --faces all --save --out runs/demo/faces.csv
	@cat runs/demo/faces.csv; echo "annotated photos: runs/demo/annotated/"

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
