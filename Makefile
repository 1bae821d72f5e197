# The few commands everyone runs. `make test` and `make demo` set everything up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MIN_FREE_KB ?= 8000000

.PHONY: venv test lint format demo bench clean browser

$(STAMP): pyproject.toml
	@# A new venv takes about 7 GB (torch's wheel alone unpacks to 5.5 GB): on a fuller disk, say so before starting
	@# rather than fail mid-install.
	@test -x $(BIN)/python || { avail=$$(df -Pk . | awk 'NR==2 {print $$4}'); [ "$${avail:-0}" -ge $(MIN_FREE_KB) ] || \
	  { echo "make: creating $(VENV) needs about 8 GB free on the disk of $$(pwd); $$(( $${avail:-0} / 1024 )) MB are free"; exit 1; }; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# SAM 2 (Meta's sam2, an sdist): built against the torch just installed, without its optional CUDA extension
	# (plain `pip install sam2` also works but downloads a second torch into an isolated build environment).
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install --quiet --no-build-isolation 'sam2>=1.1'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# The serve page's browser test needs Debian's chromium + chromedriver: installed here when absent and apt-get
# can run (root); elsewhere the test skips with a message saying so.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  echo "make test: installing Debian's chromium + chromium-driver with apt-get (the serve page's browser test)" && \
	  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "chromium not installed (needs root + apt-get): the browser test will skip"; }

test: lint browser
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/infosam demo

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_step.py --preset tiny

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
