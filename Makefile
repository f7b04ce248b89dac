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
	$(BIN)/python -m pip install --quiet -e ".[test,formats,napari,bioimageio,distributed]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/cellmixer demo --output demo_output --overwrite

# napari's canvas needs OpenGL even offscreen: the tests get it from an X server that pytest-xvfb starts.
# Installed here when missing (as root, from Debian's packages); without it the napari viewer tests skip.
test: install
	@command -v Xvfb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && apt-get install -y -qq xvfb >/dev/null) ; } || \
	  echo "Xvfb not installed: the napari viewer tests will be skipped (apt-get install xvfb)"
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo_output .pytest_cache
