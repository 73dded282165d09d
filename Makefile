# Two commands on a fresh machine:
#   make demo   the four tasks on the bundled sample with a tiny local model (core install only)
#   make test   the full test suite, the README's test command (every extra and the test tools)
#   make test-fast   the edit-test loop: every test not marked slow (under 2 minutes on 2 cores)
# Both run PYTEST_WORKERS pytest-xdist workers (default: one per core; PYTEST_WORKERS=0 runs in one process).
# Each creates $(VENV) when it is missing, installs CPU torch first where there is no NVIDIA GPU
# (an unpinned torch would pull a multi-GB CUDA build), then the project, editable, with the extras it needs.
# Stamp files in $(VENV) make a second run install nothing; editing pyproject.toml reinstalls.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# Where PyPI's torch is a CUDA build, point this at a CPU index, e.g. https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PYTEST_ARGS ?=
# A file's tests stay on one worker (--dist loadfile), so its fixtures are built once.
PYTEST_WORKERS ?= auto

PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: torch comes with the project (CUDA build)"; \
	else \
		echo "No NVIDIA GPU: installing CPU $(TORCH) first"; \
		$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"; \
	fi
	@touch $@

$(VENV)/.core: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e .
	@touch $@

# The test extra builds llama-cpp-python from source on a new machine (minutes; pip caches the wheel).
$(VENV)/.all: pyproject.toml $(VENV)/.torch
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install --quiet -e ".[all,test]"
	@touch $@ $(VENV)/.core

# pytest exits 5 when it ran no test: say so, and fail.
define pytest
	@$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc = 5 ]; then echo "make: pytest selected no tests (exit 5)" >&2; fi; exit $$rc
endef

demo: $(VENV)/.core
	$(VENV)/bin/moral-ambiguity demo

# The longest files first, then the rest (pytest collects a file once): a worker that picks a long file up
# last would keep the suite waiting on it alone.
LONG_TEST_FILES := tests/real_model/test_finetune.py tests/test_leaderboard.py tests/test_encoder.py \
	tests/real_model/test_readouts_smollm2.py tests/real_model/test_smollm2.py tests/test_multiprocess.py \
	tests/test_lm_eval_e2e.py tests/test_trainer.py tests/test_model_identity.py

test: $(VENV)/.all
	$(call pytest,-q $(LONG_TEST_FILES) tests)

test-fast: $(VENV)/.all
	$(call pytest,-q -m "not slow")
