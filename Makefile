# whitenclip developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.whitenclip-installed
DEMO   := demo-out

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/whitenclip fit data/demo_reference.npy -o $(DEMO)/demo-whitener.safetensors
	$(VENV)/bin/whitenclip info $(DEMO)/demo-whitener.safetensors
	$(VENV)/bin/whitenclip score data/demo_queries.npy -w $(DEMO)/demo-whitener.safetensors

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
