# The two commands of the README, plus helpers. Each creates or updates .venv when needed.
#   make run   - the default workflow (snakemake --cores 8 on configs/config.yaml)
#   make test  - the test suite (what CI runs)

VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
# The extras installed with seg: dev (pytest) and napari (the plugin and its viewer tests). Without
# napari (make test EXTRAS=dev) tests/test_napari.py runs its plain tests and skips the viewer ones.
# The stamp names the extras, so changing them reinstalls.
EXTRAS  ?= dev,napari
comma   := ,
STAMP   := $(VENV)/.seg-installed-$(subst $(comma),-,$(EXTRAS))
CORES   ?= 8
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: run quick test test-all lint dry-run report bench venv clean

venv: $(STAMP)

# pip (not uv/poetry) so that torch comes as the pinned build pip finds locally. elasticdeform's
# PyPI wheel (0.5.1) was compiled against NumPy 1.x and fails under NumPy 2: build it from source.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q numpy==2.4.6
	$(BIN)/python -m pip install -q --no-binary elasticdeform elasticdeform==0.5.1
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

run: venv
	snakemake --cores $(CORES)

quick: venv
	snakemake --cores $(CORES) --configfile configs/quick.yaml

# Two pytest-xdist workers (the machines have 2 cores; a third of a serial run's time is waiting on
# subprocesses and SLURM), each taking whole test files, in the order tests/conftest.py gives them
# (longest first). Not --dist loadgroup: pytest-xdist 3.8 cannot set its groups on pytest 9's nodes.
XDIST   ?= -n 2 --dist loadfile --no-loadscope-reorder
# The napari viewer tests need an X display with OpenGL: without DISPLAY, pytest runs under a virtual
# one (xvfb-run, Debian package xvfb; .ci/run installs it) when xvfb-run is there, else they skip.
XRUN    ?= $(if $(DISPLAY),,$(if $(shell command -v xvfb-run 2>/dev/null),xvfb-run -a -s "-screen 0 1280x1024x24"))

test: venv
	$(XRUN) pytest -q -m "not slow" -p no:cacheprovider $(XDIST)

test-all: venv
	$(XRUN) pytest -q -p no:cacheprovider $(XDIST)

lint: venv
	snakemake --lint

dry-run: venv
	snakemake -n

report: venv
	snakemake --report results/snakemake-report.zip

# The speed benchmarks (minutes each). bench/small_objects.py, transfer.py and loop.py are studies (tens of minutes of training,
# raw data under SEG_RAW_ROOT): run it on its own.
bench: venv
	for b in bench/*.py; do case $$b in *small_objects.py|*transfer.py|*loop.py) continue;; esac; python $$b || exit 1; done

clean:
	rm -rf results results-quick .snakemake
