"""The event-stream spec loader reads what PyYAML's safe loader reads, and refuses what specs forbid with
the place (line, column) of the offending text."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controller import spec_yaml
from controller.spec import SpecError, parse_text
from controller.spec_lines import line_index

PYYAML: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@pytest.mark.parametrize(
    "text",
    [
        "items:\n  - {job: hello, args: [a, 'b', \"c\"]}\n",
        "a: [1, -2, 2.5, 1e3, .inf, -.inf, true, False, yes, no, on, null, ~, '', 0x1f, 0o17, 017, 1_000]\n",
        "d: [2020-01-01, 2020-01-01T10:00:00Z, 12:30:00, 1:20]\n",
        "s: !!str 5\ni: !!int '7'\nb: !!binary aGk=\nf: !!float '1'\n",
        "block: |\n  two\n  lines\nfolded: >\n  one\n  line\nempty:\nplain text: 'with: colon'\n",
        "? complex key\n: value\n3: three\n2.5: float key\nnull: n\ntrue: t\n",
        "a: &anchor [1, 2]\nb: {c: d}\n",
        "- just\n- a\n- list\n",
        "",
        "# only a comment\n",
        "scalar\n",
        "---\nitems: []\n...\n",
        # Plain strings that start like a number, bool, null or date without being one.
        "a: [n1, no1, nulls, yes-man, true2, Off-by-one, ~x, .5x, -x, +x, 0x, 1-2, 2020-1-1x, =x, <<x]\n",
        "{n1: a, no1: b, 0x: c, .x: d, '<<': e}\n",
        "!!str 5\n",
    ],
)
def test_reads_what_pyyaml_reads(text: str) -> None:
    assert spec_yaml.load(text) == yaml.load(text, Loader=PYYAML)


@pytest.mark.parametrize(
    ("text", "problem", "line", "column"),
    [
        ("a: &x [1, 2]\nitems: *x\n", "YAML aliases (*name) are not allowed", 2, 8),
        ("base: {job: hello}\nitems:\n  - <<: {job: x}\n", "YAML merge keys (<<) are not allowed", 3, 5),
        ("items:\n  - job: hello\n    job: x\n", "duplicate key 'job'", 3, 5),
        ("? [a, b]\n: 1\n", "mapping keys must be plain strings", 1, 3),
        ("? 2020-01-01\n: 1\n", "mapping keys must be plain strings", 1, 3),
        ("a: !!set {x, y}\n", "YAML tag 'tag:yaml.org,2002:set' is not allowed", 1, 4),
        ("a: !custom x\n", "could not determine a constructor for the tag '!custom'", 1, 4),
        ("a: <<\n", "could not determine a constructor", 1, 4),
        ("a: 1\n---\nb: 2\n", "but found another document", 2, 1),
        ("items: [\n", "did not find expected node content", 2, 1),
    ],
)
def test_refusals_name_the_place(text: str, problem: str, line: int, column: int) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as caught:
        spec_yaml.load(text)
    error = caught.value
    assert problem in str(error.problem)
    mark = error.problem_mark
    assert mark is not None and (mark.line + 1, mark.column + 1) == (line, column)
    with pytest.raises(SpecError, match=f"line {line}, column {column}: "):
        parse_text(text)


def test_line_index_places_values_as_the_composer_did() -> None:
    text = "batch_id: b\nitems:\n  - key: a\n    env:\n      PORT: '1'\n  - {key: b,\n     job: x}\n"
    lines = line_index(text)
    assert lines[()] == 1
    assert lines[("items",)] == 3  # the sequence starts on its first entry
    assert lines[("items", 0, "env")] == 5  # a block mapping value starts at its first key
    assert lines[("items", 0, "env", "PORT")] == 5
    assert lines[("items", 1)] == 6
    assert lines[("items", 1, "job")] == 7


def test_an_alias_bomb_is_refused_at_its_first_alias() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 40)]
    with pytest.raises(yaml.MarkedYAMLError, match="aliases") as caught:
        spec_yaml.load("\n".join(levels))
    assert caught.value.problem_mark is not None and caught.value.problem_mark.line == 1
