# Two set-up commands: `make run` (the demo server) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000

.PHONY: run test lint typecheck format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	@echo "shipdeck is installed as $(BIN)/shipdeck: run 'export PATH=\"$$PWD/$(BIN):\$$PATH\"' to call it as shipdeck"
	$(BIN)/shipdeck serve --demo --port $(PORT)

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.core_latency
	$(BIN)/python -m benchmarks.compose_overhead
	$(BIN)/python -m benchmarks.chat_latency
	$(BIN)/python -m benchmarks.load
	$(BIN)/python -m benchmarks.governance_soak --steps 10000

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The LLM door on a local model (not in CI): `make eval-llm MODEL=path/to/model.gguf` builds
# llama.cpp's llama-server from the llama-cpp-python sdist on PyPI (cmake + gcc, one job),
# serves the model on a free port with one thread and scores `--planner llm` on both splits
# into reports/. Without MODEL it uses SHIPDECK_LLM_BASE_URL and SHIPDECK_LLM_MODEL.
LLAMA_VERSION ?= 0.3.36
LLAMA_DIR     ?= .cache/llama.cpp
LLAMA_SERVER  := $(LLAMA_DIR)/build/bin/llama-server
PLANNER       ?= llm

$(LLAMA_SERVER):
	mkdir -p $(LLAMA_DIR)
	$(BIN)/pip download --quiet --no-deps --no-binary :all: -d $(LLAMA_DIR) \
		llama-cpp-python==$(LLAMA_VERSION)
	tar -xzf $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_VERSION).tar.gz -C $(LLAMA_DIR)
	cmake -S $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp \
		-B $(LLAMA_DIR)/build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
		-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
		-DBUILD_SHARED_LIBS=OFF
	cmake --build $(LLAMA_DIR)/build --target llama-server -j 1

.PHONY: eval-llm llama-server
llama-server: $(LLAMA_SERVER)

eval-llm: $(STAMP)
ifdef MODEL
	$(MAKE) $(LLAMA_SERVER)
	$(BIN)/python -m evals.local_llm --server $(LLAMA_SERVER) --model $(MODEL) --threads 1 \
		--planner $(PLANNER)
else
	$(BIN)/python -m evals.local_llm --planner $(PLANNER)
endif
