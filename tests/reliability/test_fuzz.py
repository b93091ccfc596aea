"""Fuzzing the spec loader: whatever the input (text, bytes, YAML of random data, near-valid specs), loading,
validating and planning either succeed or raise SpecError / PlanError with a message; never anything else.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.catalog import Catalog
from controller.cli import build_parser, main
from controller.options import OptionError, RunOptions, meta_of
from controller.plan import Mode, PlanError, plan
from controller.spec import SpecError, is_batch_id, load_batch, parse_text, validate

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = ["job", "image", "command", "args", "env", "task_count", "timeout", "retries", "cpu", "memory", "key", "label"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["hello", "flaky", "wordcount", "10s", "1h", "-1s", "PORT", "FANOUT_X", "example.com/i:1"]),
)
data = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
env = st.dictionaries(
    st.sampled_from(["A", "PORT", "FANOUT_LAUNCH_KEY", "X_GOOGLE_A", "", "A=B", "CLOUD_RUN_JOB", "B"]),
    st.one_of(scalars, st.fixed_dictionaries({}, optional={"secret": scalars, "value": scalars, "version": scalars})),
    max_size=3,
)
item = st.fixed_dictionaries(
    {},
    optional={
        "job": st.sampled_from(["hello", "flaky", "wordcount", "nope", ""]) | scalars,
        "image": st.sampled_from(["example.com/i:1"]) | scalars,
        "command": st.lists(st.text(max_size=5), max_size=3) | scalars,
        "args": st.lists(st.text(max_size=5), max_size=3) | scalars,
        "env": env | scalars,
        "task_count": st.integers(-2, 20_000) | scalars,
        "timeout": st.sampled_from(["1s", "0s", "10m", "200h", "x"]) | scalars,
        "retries": st.integers(-1, 12) | scalars,
        "cpu": scalars,
        "memory": scalars,
        "key": st.sampled_from(["a", "a", "b", "bad key", ""]) | scalars,
        "label": scalars,
        "bogus": scalars,
    },
)
spec = st.fixed_dictionaries(
    {"items": st.lists(item, max_size=5) | scalars},
    optional={
        "batch_id": st.sampled_from(["b-1", "Bad Id", ""]) | scalars,
        "defaults": st.fixed_dictionaries({}, optional={f: item.map(lambda i, f=f: i.get(f)) for f in FIELDS})
        | scalars,
        "keep_jobs": scalars,
    },
)


def _load(catalog: Catalog, source: Any) -> None:
    """The CLI's path: parse, validate, plan in every mode. Only SpecError/PlanError may escape."""
    errors: list[SpecError | PlanError] = []
    try:
        if isinstance(source, str | bytes):
            parsed, text = parse_text(source)
            batch = validate(parsed, catalog, text=text)
        else:
            batch = load_batch(source, catalog)
    except SpecError as exc:
        errors.append(exc)
    else:
        for mode in Mode:
            try:
                plan(batch, catalog, mode=mode, manifest_root="gs://b/m")
            except PlanError as exc:
                errors.append(exc)
    for error in errors:
        assert error.problems and all(isinstance(p, str) and p for p in error.problems)
        assert str(error)


@FUZZ
@given(text=st.text(max_size=400))
def test_any_text(catalog: Catalog, text: str) -> None:
    _load(catalog, text)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_any_bytes(catalog: Catalog, raw: bytes) -> None:
    _load(catalog, raw)


@FUZZ
@given(value=data)
def test_random_data_as_yaml_json_and_objects(catalog: Catalog, value: Any) -> None:
    _load(catalog, yaml.safe_dump(value, allow_unicode=True))
    _load(catalog, json.dumps(value, allow_nan=True))
    if isinstance(value, dict | list):
        _load(catalog, value)


@FUZZ
@given(value=spec)
def test_near_valid_specs(catalog: Catalog, value: dict[str, Any]) -> None:
    _load(catalog, value)
    _load(catalog, yaml.safe_dump(value, allow_unicode=True))


# -- the command line's options and FANOUT_* variables ------------------------------------------------------

_RUN = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
RUN_FLAGS = sorted(flag for action in _RUN._actions for flag in action.option_strings if flag not in {"-h", "--help"})
ENV_NAMES = sorted(meta_of(info).env or "" for info in RunOptions.model_fields.values() if meta_of(info).env)
option_values = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["0", "-1", "1", "16", "1e999", "nan", "inf", "-inf", "1e-9", "0.3", "2h", "45m", "0s", "abc", "9" * 5000,
         "../x", "/abs", "b-1", "run=5", "logs=none", "read=0", "x=1", "auto", "packed", "per-item", "all", ""]
    ),
)  # fmt: skip
flag_pairs = st.lists(st.tuples(st.sampled_from(RUN_FLAGS), option_values), max_size=5)
# A process environment cannot hold NUL (the OS refuses it before fanout could see it).
environments = st.dictionaries(st.sampled_from(ENV_NAMES), option_values.filter(lambda v: "\x00" not in v), max_size=4)


@FUZZ
@given(pairs=flag_pairs, environ=environments)
def test_run_options_are_accepted_within_their_rules_or_refused_with_a_message(
    pairs: list[tuple[str, str]], environ: dict[str, str]
) -> None:
    argv = ["run", "spec.yaml"]
    for flag, value in pairs:
        argv += [flag] if flag == "--quiet" else [f"{flag}={value}"]
    stderr = io.StringIO()
    code = None
    with contextlib.redirect_stderr(stderr):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exited:  # argparse's own refusal: exit 2 with a usage line
            code = exited.code
    if code is not None:
        assert code == 2
        assert "fanout run: error: " in stderr.getvalue()
        return
    try:
        options = RunOptions.from_cli(args, environ)
    except OptionError as exc:
        lines = str(exc).splitlines()
        assert lines
        assert all(line.startswith(("--", "FANOUT_")) and ": " in line and len(line) < 400 for line in lines)
        return
    assert 1 <= options.concurrency <= 1000
    assert math.isfinite(options.poll_interval)
    assert options.poll_interval >= 0.05
    assert options.batch_id is None or is_batch_id(options.batch_id)
    assert options.deadline_seconds is None or 1 <= options.deadline_seconds <= 30 * 86400
    rates = options.budget()
    assert all(rate is None or rate >= 1 for rate in (rates.run, rates.write, rates.read, rates.logs))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(environ=environments)
def test_help_and_plan_never_trace_back_whatever_the_environment(environ: dict[str, str]) -> None:
    from unittest import mock

    with mock.patch.dict(os.environ, environ), contextlib.redirect_stdout(io.StringIO()):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            for command in ("run", "plan"):
                with pytest.raises(SystemExit) as exited:
                    main([command, "--help"])
                assert exited.value.code == 0
            code = main(["plan", "examples/hello.yaml"])
    assert code in {0, 2}
    if code == 2:
        assert stderr.getvalue().startswith("fanout: ")
