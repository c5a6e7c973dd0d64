# The two commands of the README, plus helpers. Each creates or updates .venv when needed.
#   make run   - the default workflow (snakemake --cores 8 on configs/config.yaml)
#   make test  - the test suite (what CI runs)

VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.seg-installed
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
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

run: venv
	snakemake --cores $(CORES)

quick: venv
	snakemake --cores $(CORES) --configfile configs/quick.yaml

# Two pytest-xdist workers (the machines have 2 cores; a third of a serial run's time is waiting on
# subprocesses and SLURM), each taking whole test files, in the order tests/conftest.py gives them
# (longest first). Not --dist loadgroup: pytest-xdist 3.8 cannot set its groups on pytest 9's nodes.
XDIST   ?= -n 2 --dist loadfile --no-loadscope-reorder

test: venv
	pytest -q -m "not slow" -p no:cacheprovider $(XDIST)

test-all: venv
	pytest -q -p no:cacheprovider $(XDIST)

lint: venv
	snakemake --lint

dry-run: venv
	snakemake -n

report: venv
	snakemake --report results/snakemake-report.zip

# The speed benchmarks (minutes each). bench/small_objects.py is a study (about 45 min of training,
# raw data under SEG_RAW_ROOT): run it on its own.
bench: venv
	for b in bench/*.py; do case $$b in *small_objects.py) continue;; esac; python $$b || exit 1; done

clean:
	rm -rf results results-quick .snakemake
