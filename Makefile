# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.physalign-installed

.PHONY: setup demo test base clean

setup: $(STAMP)

# torch is pinned to the CPU wheel on this machine's disk; pyproject.toml declares only a range, which a
# plain resolver would satisfy with a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/physalign demo --out runs/demo

test: setup
	$(PY) -m pytest -q

# The base model recipe (README, "The base model"): world data, then three stages: the per-frame
# autoencoder, flow matching on its latents, and the decoder sharpened with the encoder frozen.
base: setup
	$(VENV)/bin/physalign world generate --n 4000 --split train --out data/world --seed 0
	$(VENV)/bin/physalign train --config configs/autoencoder.yaml --out runs/base_ae --export checkpoints/base_ae
	$(VENV)/bin/physalign train --config configs/base.yaml --out runs/base
	$(VENV)/bin/physalign train --config configs/base_decoder.yaml --out runs/base_decoder --export checkpoints/base

clean:
	rm -rf runs/demo .pytest_cache
