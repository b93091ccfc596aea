"""The stored report (``fanout.report/v2``): report.json without the items, the items beside it in shards of
JSON lines, written as they come and read back one shard at a time; a v1 report (items inline) still opens."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.batchfolder import open_report, reader, shard_name, store_report, write_items
from controller.report import SCHEMA, SCHEMA_V1, ItemsUnreadable, Report, StoredItems
from controller.store import LocalStore

V1_FIXTURE = Path(__file__).parent / "fixtures" / "v1" / "synthetic-v1"  # written by the v1 code (json_chunks)


@pytest.mark.parametrize("items", [0, 1, 7, 2500])
def test_a_report_is_stored_as_its_header_and_item_shards_and_reads_back_equal(
    make_report: Callable[..., Report], items: int, tmp_path: Path
) -> None:
    report = make_report(items)
    store = LocalStore(tmp_path)
    shards, tally = write_items(store, report.batch_id, report.items, per_shard=1000)
    assert [shard.name for shard in shards] == [shard_name(n) for n in range(-(-items // 1000))]
    spans = [(shard.first, shard.count) for shard in shards]
    assert spans == [(start, min(1000, items - start)) for start in range(0, items, 1000)]
    assert tally.summary(launches=report.summary.launches, duration_seconds=report.summary.duration_seconds) == (
        report.summary
    )
    written = StoredItems(shards, reader(store, report.batch_id))
    _, url, _ = store_report(store, report.model_copy(update={"items": written, "item_shards": shards}))
    header = json.loads(Path(url).read_bytes())
    assert next(iter(header)) == "schema" and header["schema"] == SCHEMA
    assert "items" not in header and header["summary"]["total"] == items  # the summary alone, without items
    # One item per line, so that a shard can be read (and grepped) item by item.
    for shard in shards:
        assert len((tmp_path / report.batch_id / shard.name).read_bytes().splitlines()) == shard.count
    again = open_report(str(tmp_path / report.batch_id)).report
    assert len(again.items) == items
    assert list(again.items) == list(report.items)
    assert again.model_copy(update={"items": report.items, "item_shards": None}) == report
    if items:
        assert again.items[items - 1] == report.items[items - 1] and again.items[-1] == report.items[-1]


def test_a_report_built_in_memory_is_stored_with_its_items_in_shards(
    make_report: Callable[..., Report], tmp_path: Path
) -> None:
    report = make_report(30)
    stored, url, _ = store_report(LocalStore(tmp_path), report)
    assert stored.item_shards is not None and sum(s.count for s in stored.item_shards) == 30
    found = open_report(str(tmp_path / report.batch_id))
    opened = found.report
    assert found.url == url
    assert [item.key for item in opened.items] == [item.key for item in report.items]


def test_a_missing_or_cut_shard_is_an_error_that_names_it(make_report: Callable[..., Report], tmp_path: Path) -> None:
    report = make_report(25)
    store = LocalStore(tmp_path)
    shards, _ = write_items(store, report.batch_id, report.items, per_shard=10)
    written = StoredItems(shards, reader(store, report.batch_id))
    store_report(store, report.model_copy(update={"items": written, "item_shards": shards}))
    folder = tmp_path / report.batch_id
    lines = (folder / shards[1].name).read_bytes().splitlines()
    (folder / shards[1].name).write_bytes(b"\n".join(lines[:-1]) + b"\n")
    opened = open_report(str(folder)).report
    assert opened.summary.total == 25  # the summary reads without the items
    with pytest.raises(ItemsUnreadable, match=r"items/00001.jsonl holds 9 items, not the 10"):
        list(opened.items)
    (folder / shards[2].name).unlink()
    with pytest.raises(ItemsUnreadable, match=r"items/00002.jsonl is missing"):
        opened.items[24]


def test_a_v1_report_still_opens_and_is_rewritten_as_v2_when_it_changes(tmp_path: Path) -> None:
    folder = tmp_path / V1_FIXTURE.name
    shutil.copytree(V1_FIXTURE, folder)
    assert json.loads((folder / "report.json").read_bytes())["schema"] == SCHEMA_V1
    report = open_report(str(folder)).report
    assert report.schema_ == SCHEMA_V1 and report.item_shards is None
    assert len(report.items) == report.summary.total == 25
    assert report.items[3].result == {"rows": [1, 2]}
    assert report.rerun_of is not None and report.rerun_of.batch_id == "nightly"
    stored, _, _ = store_report(LocalStore(tmp_path), report)
    assert stored.schema_ == SCHEMA
    again = open_report(str(folder)).report
    assert again.schema_ == SCHEMA and list(again.items) == list(report.items)
