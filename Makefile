# Two commands: `make demo` (set-up + the main job on synthetic data; VERBOSE=1 shows every line) and `make test`.
# Everything runs in .venv, made by `make setup` from the python3 on PATH (3.10+; SYSTEM_PYTHON=... picks another).
SYSTEM_PYTHON ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
DATA ?= data
OUT ?= outputs

.PHONY: setup demo test

setup: $(VENV)/.installed  ## .venv with the pinned requirements (a second run takes a second)

$(VENV)/.installed: requirements.txt
	@$(SYSTEM_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "error: $(SYSTEM_PYTHON) is older than 3.10; run make SYSTEM_PYTHON=/path/to/python3.11 ..."; exit 2; }
	@need=""; ldconfig -p | grep -q libusb-1.0.so.0 || need="libusb-1.0-0"; \
	  $(SYSTEM_PYTHON) -c 'import ensurepip, venv' 2>/dev/null || need="$$need python3-venv"; \
	  if [ -n "$$need" ]; then \
	    if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    echo "installing system packages: $$need"; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$need; fi
	@[ -x $(PYTHON) ] || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

demo: setup  ## synthetic RGB-D scenes -> SpaceSGG training data and inspector; grid images -> spatial IDs -> Figure 5 and interventions (random vs trained tiny LLaVA); ends with a table of outputs
	$(PYTHON) -m spacesgg.demo --data-dir $(DATA) --output-dir $(OUT) $(if $(filter 1,$(VERBOSE)),--verbose)

test: setup  ## lint (ruff, configured in pyproject.toml), then the test suite
	@need=""; command -v chromium >/dev/null || need="chromium"; command -v slurmctld >/dev/null || need="$$need slurm-wlm"; \
	  if [ -n "$$need" ]; then if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    echo "installing $$need for the tests (the HTML inspector in a browser, a one-node SLURM cluster)"; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$need; fi
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q tests
