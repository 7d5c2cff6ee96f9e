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

demo: setup  ## synthetic RGB-D scenes -> SpaceSGG outputs; grid images for spatial IDs
	$(PYTHON) dataengine/make_scenes.py --output-dir $(DATA)/synthetic_scenes
	PYTHON=$(PYTHON) bash run_spacesgg.sh $(DATA)/synthetic_scenes $(OUT)/spacesgg
	PYTHON=$(PYTHON) bash dataengine/grid_data.sh $(DATA)/grid_data

test: setup  ## the test suite
	$(PYTHON) -m pytest -q tests
