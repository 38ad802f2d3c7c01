# Two commands: `make demo` and `make test`. Each sets up .venv itself.
# `make test-fast`: lint and the tests that neither build with TVM, export torch models nor are slow.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    := build/demo

.PHONY: demo test test-all test-fast lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch and torchvision first, pinned together: timm (the model corpus) needs a torchvision that
	# imports, and 0.29.1 is built against torch 2.14.1 (with 2.13.0 it fails: torchvision::nms);
	# a looser requirement makes pip fetch whatever CUDA build the registry has newest
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	# SpikingJelly, only for the test that cross-checks the neuromorphic op counts: without its
	# dependencies (they pull a CUDA torch); its op counter needs loguru alone
	$(BIN)/python -m pip install -q --no-deps spikingjelly==2.0.0 loguru
	touch $(STAMP)

# export -> inspect -> profile -> predict -> validate, on MobileNetV2, into a table of its own
demo: $(STAMP)
	mkdir -p $(DEMO)
	$(BIN)/hwlat zoo
	$(BIN)/hwlat export mobilenet_v2 -o $(DEMO)/mobilenet_v2.onnx
	$(BIN)/hwlat inspect $(DEMO)/mobilenet_v2.onnx
	$(BIN)/hwlat devices
	$(BIN)/hwlat profile $(DEMO)/mobilenet_v2.onnx --device cpu-ort --table $(DEMO)/table.sqlite
	$(BIN)/hwlat predict $(DEMO)/mobilenet_v2.onnx --device cpu-ort --table $(DEMO)/table.sqlite --breakdown
	$(BIN)/hwlat validate $(DEMO)/mobilenet_v2.onnx --device cpu-ort --table $(DEMO)/table.sqlite --plot $(DEMO)/validate.png

lint: $(STAMP)
	$(BIN)/ruff check hwlat tests benchmarks

test: lint
	$(BIN)/python -m pytest -q -m "not heavy"

# everything, the heavy tier too (every NAS block choice exported, more timm models, a real
# 13-device fit)
test-all: lint
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow and not tvm and not export"

clean:
	rm -rf $(VENV) build
