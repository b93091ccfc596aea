"""The flow's parameters are built from RunOptions: the same names, defaults, rules and descriptions."""

from __future__ import annotations

import pytest
from prefect.exceptions import ParameterTypeError

from controller.flow import fan_out
from controller.options import OptionError, RunOptions, flow_fields


def test_every_flow_option_is_a_parameter_with_its_default_and_description() -> None:
    properties = fan_out.parameters.properties
    assert list(properties) == ["batch", "rerun_of", "rerun_states", *flow_fields()]
    assert "emulator" not in properties  # a CLI-only option
    assert "quiet" not in properties
    for name, info in flow_fields().items():
        shown = properties[name]
        assert shown.get("default") == info.default, name
        # What the Prefect UI shows next to the parameter of a deployment.
        assert " ".join(str(shown["description"]).split()) == f"{info.description}.", name
    assert "gs:// URL" in properties["batch"]["description"]
    assert "finished batch" in properties["rerun_of"]["description"]
    assert not fan_out.parameters.required  # a batch, or rerun_of: the flow says which is missing


def test_parameters_are_checked_by_their_type_and_then_by_the_options_rules() -> None:
    validated = fan_out.validate_parameters({"batch": "examples/hello.yaml", "concurrency": "8", "mode": "packed"})
    assert validated["concurrency"] == 8
    with pytest.raises(ParameterTypeError, match="concurrency"):
        fan_out.validate_parameters({"batch": "x", "concurrency": "many"})
    with pytest.raises(OptionError, match="concurrency: between 1 and 1000, got 0"):
        RunOptions.from_parameters({"concurrency": 0})
    with pytest.raises(OptionError, match=r"poll_interval: seconds between 0\.05 and 600, got inf"):
        RunOptions.from_parameters({"poll_interval": float("inf")})
    with pytest.raises(OptionError, match="unheard_of: unknown option"):
        RunOptions.from_parameters({"unheard_of": 1})
