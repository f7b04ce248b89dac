# Set-up on a fresh machine: `make demo` or `make test`. Both create .venv once and reuse it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: here it resolves to the local CPU build; an unpinned torch pulls CUDA wheels.
# The tests read CZI and OME-Zarr files: the [formats] extra is installed with the test tools.
TORCH := torch==2.13.0

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test,formats,napari,bioimageio]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/cellmixer demo --output demo_output --overwrite

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo_output .pytest_cache
