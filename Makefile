# whitenclip developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.whitenclip-installed
DEMO   := demo-out

.PHONY: install demo test lint doctest-and-tests bench-smoke bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test,bench,dask]'
	touch $(STAMP)

install: $(STAMP)

WC     := $(VENV)/bin/whitenclip
TAB    := $(shell printf '\t')

# The main job on the embedded default: fit a MiniLM whitener on the project's own captions,
# then rank held-out and out-of-domain captions by W-CLIP likelihood (offline, CPU).
demo: $(STAMP)
	@mkdir -p $(DEMO)
	$(WC) fit data/captions.txt -o $(DEMO)/captions-whitener.safetensors
	$(WC) info $(DEMO)/captions-whitener.safetensors
	$(WC) score data/captions_heldout.txt data/captions_odd.txt -w $(DEMO)/captions-whitener.safetensors -o $(DEMO)/scores.tsv
	@echo; echo "most likely captions (loglik, pvalue if Gaussian, pvalue_conformal for any law):"
	@tail -n +2 $(DEMO)/scores.tsv | sort -t '$(TAB)' -k2,2gr | head -5 | cut -f1,2,5,6
	@echo; echo "least likely captions (loglik, pvalue if Gaussian, pvalue_conformal for any law):"
	@tail -n +2 $(DEMO)/scores.tsv | sort -t '$(TAB)' -k2,2gr | tail -8 | cut -f1,2,5,6
	@echo; echo "all scores: $(DEMO)/scores.tsv"

# CI runs this: lint, each benchmark's smoke run, then the test suite with every docstring example
test: $(STAMP) lint bench-smoke doctest-and-tests

lint: $(STAMP)
	$(PY) -m ruff check whitenclip tests benchmarks data

doctest-and-tests: $(STAMP)
	$(PY) -m pytest -q --doctest-modules whitenclip tests

bench-smoke: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b --quick"; $(PY) $$b --quick || exit 1; done

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
