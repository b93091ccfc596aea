"""Batch spec loading and validation: every problem at once, with its location, before any API call."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from controller import spec as spec_module
from controller.catalog import Catalog
from controller.redact import MIN_SECRET_CHARS
from controller.spec import BATCH_ID_RULE, KEY_RULE, SpecError, load_batch, parse_text, validate


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_jobs_dir()


def problems_of(source: object, catalog: Catalog) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_batch(source, catalog)  # type: ignore[arg-type]
    return caught.value.problems


def test_defaults_apply_and_items_override(catalog: Catalog) -> None:
    batch = load_batch(
        {
            "batch_id": "b1",
            "defaults": {"job": "hello", "env": {"A": "1", "B": "2"}, "timeout": "5m"},
            "items": [{"args": ["x"]}, {"key": "k2", "env": {"B": "3"}, "timeout": 30}],
        },
        catalog,
    )
    first, second = batch.items
    assert (first.key, first.job, first.args, dict(first.env), first.timeout_seconds) == (
        "item-00000",
        "hello",
        ("x",),
        {"A": "1", "B": "2"},
        300.0,
    )
    assert (second.key, second.args, dict(second.env), second.timeout_seconds) == (
        "k2",
        None,
        {"A": "1", "B": "3"},
        30.0,
    )
    assert batch.batch_id == "b1"


def test_every_problem_is_reported_with_its_location_and_line(catalog: Catalog, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "items:\n"
        "  - job: nope\n"  # line 2: unknown job
        "  - job: hello\n"
        "    env: {PORT: '8080', CLOUD_RUN_TASK_INDEX: '1'}\n"  # line 4: reserved names
        "  - job: hello\n"
        "    task_count: 20000\n"  # line 6: over Cloud Run's 10,000
        "  - job: wordcount\n"  # requires args
        "  - {job: hello, key: same}\n"
        "  - {job: hello, key: same}\n"  # line 9: duplicate key
        "  - {job: hello, colour: blue}\n"  # line 10: unknown field
        "  - {job: hello, timeout: 200h}\n",  # line 11: over 168h
        encoding="utf-8",
    )
    problems = problems_of(spec, catalog)
    text = "\n".join(problems)
    assert "line 2: items[0].job: no job 'nope' in the catalog" in text
    assert "items[1].env.PORT" in text and "items[1].env.CLOUD_RUN_TASK_INDEX" in text
    assert "line 6: items[2].task_count" in text
    assert "items[3].args: job 'wordcount' needs args" in text
    assert "line 9: items[5].key: duplicate key 'same' (also items[4])" in text
    assert "line 10: items[6].colour: unknown field" in text
    assert "line 11: items[7].timeout" in text and "168h" in text
    assert len(problems) == 8
    # Schema problems (found by reading each item alone once the whole list fails) and the checks after it
    # come in item order.
    indices = [int(problem.split("items[", 1)[1].split("]", 1)[0]) for problem in problems]
    assert indices == sorted(indices)


def test_problems_in_every_slice_of_a_long_spec_keep_their_own_index(catalog: Catalog) -> None:
    # Items are read against the schema a slice at a time (spec._ITEMS_PER_READ): a bad item in the first,
    # the middle and the last slice, next to good ones, each reported at its own place and in order.
    size = 2 * spec_module._ITEMS_PER_READ + 7
    items: list[dict[str, object]] = [{"key": f"k{i}", "job": "hello"} for i in range(size)]
    bad = [3, spec_module._ITEMS_PER_READ, size - 1]
    for index in bad:
        items[index]["colour"] = "blue"
    items[spec_module._ITEMS_PER_READ + 1]["key"] = "k2"
    problems = problems_of({"items": items}, catalog)
    assert problems == [
        "items[3].colour: unknown field (check the spelling; see `fanout run --help` for the spec format)",
        f"items[{bad[1]}].colour: unknown field (check the spelling; see `fanout run --help` for the spec format)",
        f"items[{bad[1] + 1}].key: duplicate key 'k2' (also items[2])",
        f"items[{bad[2]}].colour: unknown field (check the spelling; see `fanout run --help` for the spec format)",
    ]
    assert len(load_batch({"items": items[4 : bad[1]]}, catalog).items) == bad[1] - 4


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_leaves_the_garbage_collector_as_it_found_it(catalog: Catalog, enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        load_batch({"items": [{"job": "hello"}]}, catalog)
        assert gc.isenabled() is enabled
        with pytest.raises(SpecError):
            load_batch({"items": [{"job": "nope"}]}, catalog)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [1, 2]\nitems: *x\n", "aliases"),
        ("items:\n  - job: hello\n    job: hello\n", "duplicate key 'job'"),
        ('{"items": [{"job": "hello", "job": "x"}]}', "duplicate key 'job'"),
        ("items: [", "line 2, column 1"),
        ("just a string", "mapping with an 'items' list"),
        ("items: []", "items"),
        ("base: &b {job: hello}\nitems:\n  - <<: *b\n", "not allowed"),
    ],
)
def test_malformed_text_is_rejected_clearly(catalog: Catalog, text: str, expected: str) -> None:
    def load() -> None:
        data, source_text = parse_text(text)
        validate(data, catalog, text=source_text)

    with pytest.raises(SpecError) as caught:
        load()
    assert expected in str(caught.value)


def test_alias_bomb_is_refused_without_expanding(catalog: Catalog) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 12)]
    with pytest.raises(SpecError, match="aliases"):
        parse_text("\n".join(levels) + "\nitems: *a11\n")


def test_wrong_encoding_and_binary_input(catalog: Catalog, tmp_path: Path) -> None:
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("items:\n  - {job: hello, args: [caf\xe9]}\n".encode("latin-1"))
    assert "not UTF-8" in problems_of(latin, catalog)[0]
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"items:\x00\x01\x02")
    assert "NUL" in problems_of(binary, catalog)[0]
    assert "cannot read" in problems_of(tmp_path / "missing.yaml", catalog)[0]


def test_one_off_runs_and_their_rules(catalog: Catalog) -> None:
    batch = load_batch(
        {"items": [{"image": "python:3.12-slim", "command": ["python", "-c", "1"], "retries": 2, "memory": "1Gi"}]},
        catalog,
    )
    item = batch.items[0]
    assert (item.job, item.image, item.command, item.retries, item.memory) == (
        None,
        "python:3.12-slim",
        ("python", "-c", "1"),
        2,
        "1Gi",
    )
    problems = problems_of(
        {
            "items": [
                {"image": "python:3.12-slim"},  # no command
                {"job": "hello", "image": "x", "command": ["y"]},  # both
                {"job": "hello", "memory": "1Gi"},  # resources of a provisioned job are fixed
                {"job": "hello", "retries": 7},  # cannot override a job's retries per execution
                {},
            ]
        },
        catalog,
    )
    text = "\n".join(problems)
    assert "items[0].command: a one-off run needs a non-empty 'command'" in text
    assert "items[1]: give either 'job'" in text
    assert "items[2].memory" in text
    assert "items[3].retries: Cloud Run cannot override retries per execution" in text
    assert "items[4]: give 'job'" in text


def test_secret_values_are_kept_apart(catalog: Catalog) -> None:
    batch = load_batch(
        {
            "items": [
                {
                    "job": "hello",
                    "env": {
                        "PLAIN": "visible",
                        "TOKEN": {"secret": "projects/p/secrets/token", "version": "3"},
                        "API_KEY": {"value": "hunter2-hunter2"},
                    },
                }
            ]
        },
        catalog,
    )
    item = batch.items[0]
    assert dict(item.env) == {"PLAIN": "visible"}
    assert item.secret_env == (("TOKEN", "projects/p/secrets/token", "3"),)
    assert item.sensitive_env == (("API_KEY", "hunter2-hunter2"),)
    assert batch.sensitive_values() == frozenset({"hunter2-hunter2"})
    assert "give exactly one" in "\n".join(
        problems_of({"items": [{"job": "hello", "env": {"X": {"secret": "s", "value": "v-long-enough"}}}]}, catalog)
    )


def test_digest_is_stable_and_json_equals_yaml(catalog: Catalog, tmp_path: Path) -> None:
    data = {"batch_id": "same", "items": [{"job": "hello", "args": ["a"]}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    (tmp_path / "a.yaml").write_text("batch_id: same\nitems:\n  - job: hello\n    args: [a]\n")
    from_json = load_batch(tmp_path / "a.json", catalog)
    from_yaml = load_batch(tmp_path / "a.yaml", catalog)
    assert from_json.digest == from_yaml.digest == load_batch(data, catalog).digest
    assert load_batch({**data, "items": [{"job": "hello", "args": ["b"]}]}, catalog).digest != from_json.digest


def test_generated_batch_ids_are_unique_and_valid(catalog: Catalog) -> None:
    ids = {load_batch({"items": [{"job": "hello"}]}, catalog).batch_id for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("b-") and len(i) == 10 for i in ids)


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("doc-1", True),
        ("a/b.c", True),
        ("a..b", True),  # dots inside a segment name nothing relative
        ("doc-1\n", False),  # "$" alone would accept the trailing newline
        ("a/../b", False),
        ("a/..", False),
        ("a/./b", False),
    ],
)
def test_item_keys_are_matched_whole_and_have_no_relative_segments(catalog: Catalog, key: str, allowed: bool) -> None:
    spec = {"items": [{"job": "hello", "key": key}]}
    if allowed:
        assert load_batch(spec, catalog).items[0].key == key
    else:
        assert problems_of(spec, catalog) == [f"items[0].key: {KEY_RULE}"]


def test_batch_id_with_a_trailing_newline_is_refused(catalog: Catalog) -> None:
    problems = problems_of({"batch_id": "nightly\n", "items": [{"job": "hello"}]}, catalog)
    assert problems == [f"batch_id: {BATCH_ID_RULE}"]


def test_short_literal_secrets_are_refused_with_the_minimum(catalog: Catalog) -> None:
    problems = problems_of({"items": [{"job": "hello", "env": {"K": {"value": "abc"}}}]}, catalog)
    assert problems == [
        f"items[0].env.K.value: a literal secret needs at least {MIN_SECRET_CHARS} characters to be redacted "
        "safely (this one has 3); pass a short one as a plain value or keep it in Secret Manager"
    ]


def test_a_secret_in_any_label_is_masked_and_in_a_key_refused(catalog: Catalog) -> None:
    secret = "tok-4f9a-77c1"
    batch = load_batch(
        {
            "items": [
                {"job": "hello", "env": {"TOKEN": {"value": secret}}, "label": "owner"},
                {"job": "hello", "label": f"uses {secret} too"},
            ]
        },
        catalog,
    )
    assert [item.label for item in batch.items] == ["owner", "uses *** too"]
    problems = problems_of(
        {"items": [{"job": "hello", "env": {"T": {"value": secret}}}, {"job": "hello", "key": f"k-{secret}"}]},
        catalog,
    )
    assert problems == ["items[1].key: the key contains a secret literal; keys are shown and stored in clear"]


def test_a_spec_file_over_the_limit_or_not_a_file_is_refused(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(spec_module, "MAX_SPEC_BYTES", 1024)
    large = tmp_path / "large.yaml"
    large.write_text("items:\n" + "  - job: hello\n" * 100)
    with pytest.raises(SpecError) as caught:
        load_batch(large, catalog)
    assert caught.value.problems == [
        f"cannot read the spec: {large} is over 1,024 bytes, the limit; give a YAML or JSON file"
    ]
    with pytest.raises(SpecError) as caught:
        load_batch("/dev/zero", catalog)  # its size says 0: read, it never ends
    assert caught.value.problems == ["cannot read the spec: /dev/zero is not a regular file; give a YAML or JSON file"]


@pytest.mark.parametrize(
    ("cpu", "memory", "problem"),
    [
        ("0.08", None, None),
        ("500m", "1Gi", None),
        ("1", "4Gi", None),
        ("8", "32Gi", None),
        ("2", "8Gi", None),
        ("0.07", None, "items[0].cpu: '0.07' is not a CPU limit Cloud Run takes"),
        ("0.0805", None, "items[0].cpu: '0.0805' is not a CPU limit Cloud Run takes"),
        ("3", None, "items[0].cpu: '3' is not a CPU limit Cloud Run takes"),
        ("16", None, "items[0].cpu: '16' is not a CPU limit Cloud Run takes"),
        (None, "256Mi", "items[0].memory: '256Mi' is not a memory limit Cloud Run takes"),
        (None, "33Gi", "items[0].memory: '33Gi' is not a memory limit Cloud Run takes"),
        ("250m", "1Gi", "items[0].memory: memory '1Gi' needs at least 0.5 vCPU (cpu is '250m')"),
        (None, "5Gi", "items[0].memory: memory '5Gi' needs at least 2 vCPU (cpu is '1')"),
        ("4", "1Gi", "items[0].memory: cpu '4' needs at least 2Gi of memory (memory is '1Gi')"),
    ],
)
def test_one_off_cpu_and_memory_are_checked_against_cloud_runs_limits(
    catalog: Catalog, cpu: str | None, memory: str | None, problem: str | None
) -> None:
    item = {"image": "busybox:1.36", "command": ["true"]} | ({"cpu": cpu} if cpu else {})
    item |= {"memory": memory} if memory else {}
    if problem is None:
        load_batch({"items": [item]}, catalog)
        return
    problems = problems_of({"items": [item]}, catalog)
    assert len(problems) == 1 and problems[0].startswith(problem)
