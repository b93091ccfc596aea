"""The controller's and the emulator's tables of Cloud Run's limits are copies on purpose (the emulator stands in
for Google and shares no code with what it tests): this is what keeps the copies saying the same thing."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import cloudrun_emulator.limits as emulator
import controller.limits as controller
from controller.catalog import JobDefinition


def _constants(module: object) -> dict[str, object]:
    return {name: getattr(module, name) for name in vars(module) if name.isupper() and not name.startswith("_")}


def _comparable(value: object) -> object:
    return (value.pattern, value.flags) if isinstance(value, re.Pattern) else value


def test_every_limit_both_tables_name_has_one_value() -> None:
    ours, theirs = _constants(controller), _constants(emulator)
    shared = ours.keys() & theirs.keys()
    # The limits the controller checks before a job reaches the API, every one in the emulator's table too.
    assert {
        "MAX_TASKS_PER_EXECUTION",
        "MAX_TASK_TIMEOUT_SECONDS",
        "MAX_RETRIES",
        "MAX_ENV_VARS_PER_CONTAINER",
        "JOB_NAME_RE",
        "RESERVED_ENV_NAMES",
        "RESERVED_ENV_PREFIX",
    } <= shared
    assert {name: _comparable(ours[name]) for name in shared} == {name: _comparable(theirs[name]) for name in shared}


NAMES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(sorted(controller.RESERVED_ENV_NAMES)),
    st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(["X_GOOGLE_", "x_google_", "X_GOOG"]), st.text()),
)


@given(NAMES)
def test_both_refuse_the_same_environment_variable_names_for_the_same_reason(name: str) -> None:
    assert controller.env_name_problem(name) == emulator.env_name_problem(name)


TIMEOUTS = st.one_of(
    st.from_regex(r"\A[0-9]{1,7}(\.[0-9]{1,10})?s?\Z"),
    st.sampled_from(["600s", "1s", "0s", "604800s", "604800.000000001s", "15m", " 600s", "600s\n", "-1s"]),
)


@given(TIMEOUTS)
def test_a_timeout_the_controller_accepts_the_emulator_accepts(timeout: str) -> None:
    """A job definition's timeout, checked against the provider's Duration form and Cloud Run's maximum: every
    one the controller lets through is one the emulator (as Cloud Run) accepts."""
    try:
        JobDefinition(name="j", description="d", image="i", timeout=timeout)
    except ValidationError:
        return
    assert emulator.timeout_problem(timeout) is None
