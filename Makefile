# Two commands: `make demo` (install + the main job on synthetic data) and `make test`.
PYTHON ?= python3
DATA ?= data
OUT ?= outputs

.PHONY: setup demo test

setup:  ## system library for open3d, then the pinned Python packages
	@if ! ldconfig -p | grep -q libusb-1.0.so.0; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libusb-1.0-0; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq libusb-1.0-0; fi; fi
	$(PYTHON) -m pip install -q --root-user-action=ignore -r requirements.txt

demo: setup  ## synthetic RGB-D scenes -> SpaceSGG training data; grid images -> spatial IDs of a tiny random LLaVA -> Figure 5
	$(PYTHON) dataengine/make_scenes.py --output-dir $(DATA)/synthetic_scenes
	PYTHON=$(PYTHON) bash run_spacesgg.sh $(DATA)/synthetic_scenes $(OUT)/spacesgg
	PYTHON=$(PYTHON) bash dataengine/grid_data.sh $(DATA)/grid_data
	$(PYTHON) spatial_id/make_tiny_model.py --family llava --output-dir $(DATA)/models/tiny-llava
	@echo "NOTE: the demo's spatial IDs come from a tiny LLaVA with RANDOM weights; they show the pipeline, not a finding."
	MODELS="llava-7b=$(DATA)/models/tiny-llava" DEVICE=cpu PYTHON=$(PYTHON) bash spatial_id/small_id_grid.sh $(DATA)/grid_data $(OUT)/grid_id
	$(PYTHON) spatial_id/fig5.py --id-file $(OUT)/grid_id/llava-7b.pt --text-file $(OUT)/grid_id/llava-7b_text.pt --output $(OUT)/grid_id/fig5.png --sweep-output $(OUT)/grid_id/fig5_layers.png

test: setup  ## the test suite
	$(PYTHON) -m pytest -q tests
