# Two commands a newcomer needs: `make run` (the main job) and `make test`.
# Each installs what it needs first through `make setup`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup run test lint bench clean

setup: $(VENV)/.ddla-installed
	@# Fashion-MNIST comes from Debian; install it when we are root and it is missing.
	@if [ ! -d $(FMNIST_DIR) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing dataset-fashion-mnist (Debian)"; \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
		 || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"; \
	fi
	@# Java 17 (Debian) for the Spark launcher's JVM; its tests skip when absent.
	@if ! command -v java >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing openjdk-17-jre-headless (Debian, for the Spark launcher)"; \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless >/dev/null 2>&1)) \
		 || echo "warning: could not install openjdk-17-jre-headless; the Spark launcher tests will skip"; \
	fi
	@# Headless Chromium (Debian) for the report's browser test; it skips when absent.
	@if ! command -v chromium >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (Debian, for the report browser test)"; \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)) \
		 || echo "warning: could not install chromium; the report browser test will skip"; \
	fi

$(VENV)/.ddla-installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# The pinned CPU build when torch is absent: an unpinned torch pulls a multi-GB CUDA build.
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIN)
	@# The launch engines' extras come with it, so `make test` runs every launcher for real;
	@# the constraint keeps their dependencies from replacing the CPU torch.
	@echo "$(TORCH_PIN)" > $(VENV)/torch-pin.txt
	$(BIN)/pip install -q -c $(VENV)/torch-pin.txt -e '.[dev,ray,spark,dask]'
	@touch $@

run: setup
	$(BIN)/ddla run $(ARGS)

lint: setup
	$(BIN)/ruff check ddla tests benchmarks examples
	$(BIN)/ruff format --check ddla tests benchmarks examples

test: setup lint
	$(BIN)/python -m pytest -m "not slow" -q

bench: setup
	$(BIN)/python benchmarks/ddp_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
