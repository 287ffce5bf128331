# condiff: `make run` sets everything up and opens the viewer on the bundled sample with the bundled model;
# `make test` sets everything up and runs the tests. Both create ./.venv on first use (Python 3.11+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE := resources/samples/patient07_T1.nii.gz
TORCH := torch==2.13.0

.PHONY: setup run test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: a bare "torch" requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# Export the bundled model's members for ONNX Runtime now (about 10 s, cached), not at the viewer's first launch.
	$(BIN)/python -c "import engine; engine.load_ensemble(engine.default_model_path(), device='cpu')"
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/condiff-viewer $(SAMPLE)

test: setup
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check engine app tests packaging

clean:
	rm -rf $(VENV) build dist .pytest_cache
