# whitenclip developer entry points. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.whitenclip-installed
DEMO   := demo-out

.PHONY: install demo test lint docs doctest-and-tests bench-smoke bench clean

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
	@echo; echo "most likely captions (loglik: W-CLIP log-likelihood; pvalue_conformal: share of reference captions as unlikely):"
	@printf '%8s$(TAB)%-16s$(TAB)%s\n' loglik pvalue_conformal caption
	@$(DEMO_COLUMNS) $(DEMO)/scores.tsv | sort -t '$(TAB)' -k1,1gr | head -5
	@echo; echo "least likely captions (pvalue_conformal < 0.05: unusual for the reference captions, whatever their law):"
	@printf '%8s$(TAB)%-16s$(TAB)%s\n' loglik pvalue_conformal caption
	@$(DEMO_COLUMNS) $(DEMO)/scores.tsv | sort -t '$(TAB)' -k1,1gr | tail -8
	@echo; echo "all scores (with the Gaussian pvalue, exact digits): $(DEMO)/scores.tsv"

# loglik, pvalue_conformal (3 significant digits; -8537.2 shows as -8540) and the caption, found by their header names
DEMO_COLUMNS := awk -F '$(TAB)' 'NR == 1 { for (i = 1; i <= NF; i++) col[$$i] = i; next } \
	{ v = sprintf("%.3g", $$col["loglik"]) + 0; l = (v >= 1000 || v <= -1000) ? sprintf("%.0f", v) : v; \
	  p = ("pvalue_conformal" in col) ? sprintf("%.3g", $$col["pvalue_conformal"]) : "-"; \
	  printf "%8s$(TAB)%-16s$(TAB)%s\n", l, p, $$1 }'

# CI runs this: lint, each benchmark's smoke run, the manual's build, then the test suite with every
# docstring example and every example of README.md and docs/ (tests/test_docs.py)
test: $(STAMP) lint bench-smoke docs doctest-and-tests

lint: $(STAMP)
	$(PY) -m ruff check whitenclip tests benchmarks data
	$(VENV)/bin/lint-imports  # .importlinter: the one-way layering of README, lazy imports included

# the manual (docs/, mkdocs.yml) as a site in site/ (not in git); --strict: a dead link or anchor fails
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --quiet

doctest-and-tests: $(STAMP)
	$(PY) -m pytest -q --doctest-modules whitenclip tests

bench-smoke: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b --quick"; $(PY) $$b --quick || exit 1; done

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(DEMO) .pytest_cache build site *.egg-info
