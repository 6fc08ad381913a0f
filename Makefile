# The two commands that matter: `make demo` runs the product, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: demo test venv lint check bench soak screenshots clean

$(VENV)/.installed: pyproject.toml
	@base=$$(.ci/find-python) || exit 1; \
	  [ -x $(PY) ] || { echo "creating $(VENV) with $$base"; "$$base" -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) manage.py demo --port $(PORT)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: venv
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

bench: venv
	$(PY) bench/run.py

# 30 minutes of steady load with faults; writes docs/soak.csv, docs/soak.svg and docs/benchmarks.md.
soak: venv
	$(PY) bench/soak.py --minutes 30 --write-docs

screenshots: venv
	$(PY) -m pytest tests/browser/test_screenshots.py -p no:xdist

clean:
	rm -rf $(VENV) db.sqlite3 .pytest_cache
