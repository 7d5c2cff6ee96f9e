# Two commands: `make demo` (set-up + the main job on synthetic data) and `make test`.
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

demo: setup  ## synthetic RGB-D scenes -> SpaceSGG training data; grid images -> spatial IDs -> Figure 5 and interventions (random vs trained tiny LLaVA)
	$(PYTHON) dataengine/make_scenes.py --output-dir $(DATA)/synthetic_scenes
	PYTHON=$(PYTHON) bash run_spacesgg.sh $(DATA)/synthetic_scenes $(OUT)/spacesgg
	PYTHON=$(PYTHON) bash dataengine/grid_data.sh $(DATA)/grid_data
	$(PYTHON) spatial_id/make_tiny_model.py --family llava --output-dir $(DATA)/models/tiny-llava
	@echo "NOTE: the demo's spatial IDs come from a tiny LLaVA with RANDOM weights; they show the pipeline, not a finding."
	MODELS="llava-7b=$(DATA)/models/tiny-llava" DEVICE=cpu PYTHON=$(PYTHON) bash spatial_id/small_id_grid.sh $(DATA)/grid_data $(OUT)/grid_id
	$(PYTHON) spatial_id/fig5.py --id-file $(OUT)/grid_id/llava-7b.pt --text-file $(OUT)/grid_id/llava-7b_text.pt --output $(OUT)/grid_id/fig5.png --sweep-output $(OUT)/grid_id/fig5_layers.png
	PYTHON=$(PYTHON) bash spatial_id/tiny_spatial_demo.sh $(OUT)/tiny_spatial

test: setup  ## lint (ruff, configured in pyproject.toml), then the test suite
	@need=""; command -v chromium >/dev/null || need="chromium"; command -v slurmctld >/dev/null || need="$$need slurm-wlm"; \
	  if [ -n "$$need" ]; then if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	    echo "installing $$need for the tests (the HTML inspector in a browser, a one-node SLURM cluster)"; \
	    $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$need; fi
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q tests
