# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel

# Reinstall when the declared dependencies change. constraints.txt pins the
# CPU torch wheel and transformers; torchvision is never installed.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	@if $(PY) -c "import torchvision" 2>/dev/null; then \
		echo "torchvision is installed in $(VENV); it breaks transformers here: pip uninstall torchvision"; exit 1; fi
	touch $(STAMP)

install: $(STAMP)

# One seed (about 12 minutes on an idle 2-core machine); DEMO_ARGS="--seeds 0,1,2" for the per-seed table.
demo: $(STAMP)
	@echo "load average before the demo: $$(cut -d' ' -f1-3 /proc/loadavg)"
	HF_HUB_OFFLINE=1 WANDB_MODE=offline OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false \
		$(VENV)/bin/mathse-rl demo $(DEMO_ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest tests -m "not slow and not verl_e2e" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/verifier_bench.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache mathse_runs wandb
