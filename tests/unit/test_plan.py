"""Planning: which items share an execution, how launches are keyed, what the manifests hold."""

from __future__ import annotations

import json

import pytest

from controller.catalog import Catalog
from controller.plan import ENV_LAUNCH_KEY, ENV_MANIFEST, Mode, PlanError, manifest_chunks, plan
from controller.spec import load_batch


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_jobs_dir()


def test_auto_packs_packable_items_and_keeps_the_rest_per_item(catalog: Catalog) -> None:
    batch = load_batch(
        {
            "batch_id": "p1",
            "items": [
                {"job": "hello", "args": ["a"]},
                {"job": "wordcount", "args": ["/x"]},  # alone for its job: stays per item
                {"job": "hello", "args": ["b"], "env": {"GREETING": "Hi"}},
                {"job": "hello", "task_count": 3},  # several tasks: needs its own execution
                {"job": "hello", "env": {"K": {"value": "secret-value"}}},  # secrets never go into a manifest
                {"image": "busybox", "command": ["true"]},
                {"image": "busybox", "command": ["true"]},
                {"job": "hello", "args": ["c"], "timeout": "5s"},  # another timeout: another group
            ],
        },
        catalog,
    )
    result = plan(batch, catalog, manifest_root="gs://b/r/p1/manifests")
    shapes = [(launch.job, launch.packed, [item.index for item in launch.items]) for launch in result.launches]
    one_off = result.one_off_jobs[0].name
    assert shapes == [
        ("hello", True, [0, 2]),
        ("wordcount", False, [1]),
        ("hello", False, [3]),
        ("hello", False, [4]),
        (one_off, False, [5]),
        (one_off, False, [6]),
        ("hello", False, [7]),
    ]
    assert len(result.one_off_jobs) == 1  # equal image + command share one job
    packed = result.launches[0]
    assert packed.clear_args and packed.args == () and packed.task_count == 2
    env = dict(packed.env)
    assert env[ENV_LAUNCH_KEY] == "p1/00000"
    assert env[ENV_MANIFEST] == "gs://b/r/p1/manifests/00000"
    assert result.launches[2].task_count == 3
    assert result.task_total == 2 + 1 + 3 + 1 + 1 + 1 + 1


def test_packed_manifest_resolves_default_args(catalog: Catalog) -> None:
    batch = load_batch({"batch_id": "m", "items": [{"job": "hello"}, {"job": "hello", "args": ["Zed"]}]}, catalog)
    (launch,) = plan(batch, catalog).launches
    [(name, body)] = list(manifest_chunks(launch))
    manifest = json.loads(body)
    assert name == "00000.json"
    assert manifest["offset"] == 0
    assert [i["args"] for i in manifest["items"]] == [catalog["hello"].args, ["Zed"]]
    assert [i["key"] for i in manifest["items"]] == ["item-00000", "item-00001"]


def test_large_groups_split_at_the_task_limit_and_chunk_manifests(catalog: Catalog) -> None:
    batch = load_batch({"batch_id": "big", "items": [{"job": "hello", "args": [str(i)]} for i in range(2500)]}, catalog)
    result = plan(batch, catalog, max_tasks_per_execution=1000)
    assert [launch.task_count for launch in result.launches] == [1000, 1000, 500]
    chunks = list(manifest_chunks(result.launches[2], chunk=100))
    assert [name for name, _ in chunks] == [f"{i:05d}.json" for i in range(5)]
    last = json.loads(chunks[-1][1])
    assert last["offset"] == 400 and last["items"][-1]["args"] == ["2499"]


def test_modes(catalog: Catalog) -> None:
    batch = load_batch({"items": [{"job": "hello", "args": [str(i)]} for i in range(3)]}, catalog)
    assert [launch.packed for launch in plan(batch, catalog, mode=Mode.PER_ITEM).launches] == [False] * 3
    assert [launch.packed for launch in plan(batch, catalog, mode=Mode.PACKED).launches] == [True]
    one_off = load_batch({"items": [{"image": "busybox", "command": ["true"]}, {"job": "hello"}]}, catalog)
    with pytest.raises(PlanError, match=r"items\[0\].*cannot pack"):
        plan(one_off, catalog, mode=Mode.PACKED)


def test_launch_keys_are_stable_for_the_same_batch(catalog: Catalog) -> None:
    spec = {"batch_id": "stable", "items": [{"job": "hello", "args": [str(i)]} for i in range(5)]}
    first = plan(load_batch(spec, catalog), catalog, mode=Mode.PER_ITEM)
    second = plan(load_batch(spec, catalog), catalog, mode=Mode.PER_ITEM)
    assert [launch.key for launch in first.launches] == [launch.key for launch in second.launches]
    assert [launch.key for launch in first.launches] == [f"stable/{i:05d}" for i in range(5)]
