# Two commands: `make run` and `make test`. Everything else is a helper of those two.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
YJS_NODE := tests/yjs_ref/node_modules/.package-lock.json
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test install bench bench-quick migrate seed clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

$(YJS_NODE): tests/yjs_ref/package.json tests/yjs_ref/package-lock.json
	cd tests/yjs_ref && npm ci --no-audit --no-fund --loglevel=error

migrate: install
	$(VENV)/bin/syncd migrate

seed: migrate
	$(VENV)/bin/syncd seed-demo

run: seed
	$(VENV)/bin/syncd serve

test: install $(YJS_NODE)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install $(YJS_NODE)
	$(PY) -m bench

bench-quick: install
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) var tests/yjs_ref/node_modules
