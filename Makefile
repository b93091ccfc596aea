# One command to try it, one to test it (see README.md). Everything installs into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Test workers: the suite waits on processes (tasks that sleep, servers that start, polls) about a third of
# its time on 2 cores, so more workers than cores fill those waits.
PYTEST_WORKERS ?= 4
# The emulator, fake-gcs-server and Prefect server are per worker (session fixtures), so any worker can run any
# test: each gets its next test as it finishes one, slow tests first (tests/conftest.py), so the run does not
# end on one worker still busy with a long test.

.PHONY: install install-all iac-tools run test lint bench bench-startup clean

# uv resolves and installs the same packages as pip, five times faster (19 s instead of 96 s on a fresh clone),
# and compiles them as pip does: with PYTHONDONTWRITEBYTECODE set (as here) nothing would cache them later, and
# every process that imports Prefect would compile it again (8 s of CPU instead of 4).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The project and checkov (scripts/check-iac, its own virtualenv) install side by side.
install-all:
	$(MAKE) -j2 $(VENV)/.installed iac-tools

iac-tools:
	scripts/check-iac --install

## run: install, then run the example batch on the embedded local emulator; report in ./reports
run: install
	$(VENV)/bin/fanout run examples/hello.yaml

## lint: ruff and mypy on the code, checkov on terraform/ and the Dockerfiles
lint: install
	$(VENV)/bin/ruff check controller tests jobs bench
	$(VENV)/bin/mypy
	scripts/check-iac

## test: install, lint, then the whole test suite (unit, emulator integration, browser, Prefect server)
test: install-all lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1 --durations=40 $(PYTEST_ARGS)

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
