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
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

# pytest and DeepSpeed (configs/accelerate/deepspeed.yaml) for the tests only: `make demo` needs neither.
TEST_STAMP := $(VENV)/.physalign-test-extras
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,deepspeed]'
	touch $(TEST_STAMP)

# The main job: the quick comparison of every method against SFT, from the shipped base, on the physics world
# (README, "Post-training methods and `physalign bench`"); `physalign demo` alone samples and scores the base model.
demo: setup
	$(VENV)/bin/physalign bench --profile quick --out runs/demo

test: setup $(TEST_STAMP)
	$(PY) -m pytest -q -n 2  # two workers: the multi-process tests wait on process start-up more than on the CPU

# The base model recipe (configs/base/README.md): v1 (stages one to three, rebuilt at the commit that made
# it), then v2's three fine-tuning stages on the current world, v3's stage seven and v4's stage eight. See
# scripts/make_base.sh.
base: setup
	scripts/make_base.sh

clean:
	rm -rf runs/demo .pytest_cache
