# Set-up and everyday commands. README documents `make demo` and `make test`.
PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip
OUT    ?= demo-out

# torch is pinned (pyproject). With no NVIDIA driver, ask the CPU wheel index first so no CUDA packages are
# pulled; with a driver, PyPI's normal CUDA build is used. Skipped entirely when torch is already installed.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
HAVE_NVIDIA := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo yes)

.PHONY: install install-test demo test test-fast bench clean

# The CPU index is only added when it answers (offline mirrors serve the CPU build under the plain pin).
# JupyterLab comes with it (the notebook extra): README's next step after `make demo` is `jupyter lab notebooks/`.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || { \
	  extra=""; \
	  if [ -z "$(HAVE_NVIDIA)" ] && $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" 2>/dev/null; \
	  then extra="--extra-index-url $(TORCH_CPU_INDEX)"; fi; \
	  $(PIP) install "torch==2.13.0" $$extra; }
	$(PIP) install -q -e ".[notebook]"

install-test: install
	$(PIP) install -q -e ".[test]"

demo: install
	workbench demo --out $(OUT) --quick

test: install-test
	$(PYTHON) -m pytest -q

test-fast: install-test
	$(PYTHON) -m pytest -q -m "not slow and not browser"

bench: install-test
	for b in benchmarks/bench_*.py; do $(PYTHON) $$b || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache build *.egg-info
