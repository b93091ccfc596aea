# One command to try it, one to test it (see README.md). Everything installs into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test workers: four on 2 cores (three and six both took longer: docs/benchmarks.md, "Build and test tooling"):
# a worker also waits on the processes of its test (tasks, servers, polls), and more only add contention.
PYTEST_WORKERS ?= 4
# The emulator and fake-gcs-server are per worker (session fixtures) and the Prefect server is the run's (each
# worker's flows in a project of their own), so any worker can run any test: each gets its next test as it
# finishes one, slow tests first (tests/conftest.py), so the run does not end on one worker still busy with a
# long test.

.PHONY: install run test suite unit fmt lint lint-code lint-iac test-modules bench bench-startup clean

# uv resolves and installs the same packages as pip, several times faster, and compiles them as pip does: with
# PYTHONDONTWRITEBYTECODE set (as here) nothing would cache them later, and every process that imports Prefect
# would compile it again. The virtualenv starts without pip (ensurepip's install of it would come before
# anything else can start): the machine's pip puts uv in it, or, where that pip is missing or older than 22.3
# (no --python), the venv's own. What each saves: docs/benchmarks.md, "Build and test tooling".
$(VENV)/.installed: pyproject.toml
	python3 -m venv --without-pip $(VENV)
	python3 -m pip --python $(PY) install -q uv || { $(PY) -m ensurepip >/dev/null && $(PY) -m pip install -q uv; }
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[test]'
	touch $@

install: $(VENV)/.installed

## run: install, then run the example batch on the embedded local emulator; report in ./reports
run: install
	@$(VENV)/bin/fanout run examples/hello.yaml; status=$$?; \
	echo "fanout is in $(VENV)/bin: source $(VENV)/bin/activate to have it on PATH"; exit $$status

## lint: ruff and mypy on the code, checkov on terraform/ and the Dockerfiles (side by side with make -j)
lint: lint-code lint-iac

CODE := controller tests jobs bench cloudrun_emulator

lint-code: install
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/mypy

## fmt: ruff's safe fixes (import order among them), then ruff format, on the code
fmt: install
	$(VENV)/bin/ruff check --fix $(CODE)
	$(VENV)/bin/ruff format $(CODE)

# checkov installs into its own virtualenv on first use, with the project's uv.
lint-iac: install
	scripts/check-iac

# The test run's Python processes keep their bytecode, as Python does unless PYTHONDONTWRITEBYTECODE is set
# (it is on some CI images): otherwise every xdist worker rewrites every test module's asserts again (about
# twice the CPU per worker: docs/benchmarks.md).
TEST_ENV := PYTHONDONTWRITEBYTECODE=

# pytest rewrites and caches the test modules once, instead of each worker doing it at once.
test-modules: install
	$(TEST_ENV) $(PY) -m pytest --collect-only -q -p no:xdist > /dev/null

## test: install, then lint (ruff, mypy, checkov) and the whole test suite side by side (unit, emulator
## integration, browser, Prefect server); fails if either fails
test:
	$(MAKE) -j4 lint-code lint-iac suite

## unit: the fast loop: the tests of tests/unit, tests/report and tests/store that need no Prefect server, no
## emulator or fake-gcs-server, no browser and are not slow (markers: CONTRIBUTING.md), in one process
unit: install
	$(TEST_ENV) $(PY) -m pytest -p no:xdist -q -m "not prefect and not emulator and not browser and not slow" \
		tests/unit tests/report tests/store $(PYTEST_ARGS)

# The suite starts as soon as the test modules are collected; mypy and checkov run beside its
# first minute instead of before it. A lint failure that comes before the suite starts keeps it from starting.
suite: test-modules
	$(TEST_ENV) $(PY) -m pytest -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1 --durations=40 $(PYTEST_ARGS)

## bench: the fan-out benchmark against the emulator (see bench/README.md)
bench: install
	$(PY) -m bench
	$(PY) -m bench.scale --masks-off
	$(PY) -m bench.plan

## bench-startup: one trivial item, phase by phase, with no Prefect server configured and with one running
bench-startup: install
	$(PY) -m bench.startup

clean:
	rm -rf $(VENV) .venv-iac .pytest_cache .mypy_cache .ruff_cache reports
