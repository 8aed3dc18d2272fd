# Two commands: `make run` and `make test`. Everything else is a helper of those two.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
NODE_DIRS := tests/yjs_ref tests/ws_node pwa
PWA_DIST := pwa/dist/index.html
CHROMIUM := /usr/bin/chromium
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test install node pwa chromium bench bench-quick migrate seed clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# npm ci in every Node package of the repo (exact versions from the lock files)
%/node_modules/.package-lock.json: %/package.json %/package-lock.json
	cd $* && npm ci --no-audit --no-fund --loglevel=error

node: $(foreach d,$(NODE_DIRS),$(d)/node_modules/.package-lock.json)

$(PWA_DIST): pwa/node_modules/.package-lock.json $(shell find pwa/src pwa/public pwa/index.html pwa/*.ts pwa/*.json -type f 2>/dev/null)
	cd pwa && npm run build

pwa: $(PWA_DIST)

# Debian's Chromium for the browser tests (tools that download their own browser fail here);
# under CI=true a missing browser is an error, elsewhere the browser tests skip.
chromium:
	@test -x $(CHROMIUM) || (apt-get install -y -q chromium >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
	  test "$$CI" != "true" || (echo "chromium is required under CI=true" >&2; exit 1)

migrate: install
	$(VENV)/bin/syncd migrate

seed: migrate
	$(VENV)/bin/syncd seed-demo

run: pwa seed
	$(VENV)/bin/syncd serve

test: install node pwa chromium
	cd pwa && npm test --silent
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: install node pwa chromium bench/peers/node_modules/.package-lock.json
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench

bench-quick: install node pwa chromium bench/peers/node_modules/.package-lock.json
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench --quick

clean:
	rm -rf $(VENV) var $(foreach d,$(NODE_DIRS),$(d)/node_modules) pwa/dist
