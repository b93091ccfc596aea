"""The batch folder: what lies in ``<report-to>/<batch-id>/`` and how it is written and read.

    batch.json        the batch's owner and lease (controller.ownership, create-only then generation-matched)
    spec.json         each item's entry with its defaults applied, literal secrets withheld (create-only)
    report.json       the canonical report (controller.report) but its items; a resumed batch's replaces it
                      keeping its reruns
    items/            the report's items, SHARD_ITEMS to a JSON-lines shard (fanout.report/v2)
    report.html       the page of report.json (controller.html_report)
    results/          what the items' tasks wrote to $FANOUT_RESULT_FILE (controller.results)
    manifests/        the item lists of packed launches (controller.plan)

Here: spec.json, report.json, its item shards and report.html written, a stored report read back (the batch
ran to its end already), and a report opened by where it is (a report.json, its batch folder, or a gs:// URL
of either), for ``fanout report show`` and ``fanout rerun`` alike.

The shards are written first, as the items are made, and report.json last, so a report.json never names a
shard that was not written; whoever reads the summary reads a few kilobytes, and whoever reads the items
holds one shard at a time. A v1 report.json (items inline) still reads, and is stored as v2 when it changes.
A report written again (a resumed batch, the report that replaces an interim one) rewrites the same shards,
one whole object at a time, then its report.json.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from controller.files import NotReadable, read_regular_file
from controller.html_report import render_html_chunks
from controller.policy import RetryPolicy
from controller.report import SCHEMA, ItemResult, ItemShard, Report, Rerun, StoredItems, Tally, item_json
from controller.spec import Batch, Item, new_batch_id
from controller.store import Store, StoreConflict, StoreError, open_store, read_url

SPEC_FILE = "spec.json"
SPEC_SCHEMA = "fanout.spec/v1"
REPORT_FILE = "report.json"
HTML_FILE = "report.html"
ITEMS_FOLDER = "items"
# 10,000 items are about 7 MB of JSON lines: a million-item batch is 100 objects, and a reader holds one.
SHARD_ITEMS = 10_000
WITHHELD = "withheld"  # the key that marks a literal secret left out of spec.json
MAX_REPORT_BYTES = 2 * 1024**3  # more than any fanout report: a bound on what opening one reads
# Each lost race for a stored report means another rerun listed itself in it meanwhile; only many reruns
# started at the same moment lose this often.
RESERVE_ATTEMPTS = 8
_RERUNS: TypeAdapter[list[Rerun]] = TypeAdapter(list[Rerun])

log = logging.getLogger(__name__)


class ReportUnreadable(Exception):
    """The location holds no report this version can read; the message says why and where."""


# -- spec.json: the entries every batch stores when it opens ---------------------------------------------


def spec_entry(item: Item, *, withhold_secrets: bool, retry: RetryPolicy | None = None) -> dict[str, Any]:
    """The item as a spec entry with its defaults applied (``retry``: the batch's retry policy, which an item
    of its own does not hold): run as it stands, it runs the item again."""
    entry: dict[str, Any] = {"key": item.key, "job": item.job} if item.job else {"key": item.key, "image": item.image}
    policy = item.retry or retry
    fields = {
        "command": list(item.command) if item.command is not None else None,
        "args": list(item.args) if item.args is not None else None,
        "task_count": item.task_count,
        "timeout": item.timeout_seconds,
        "retries": item.retries if item.job is None else None,  # a provisioned job's retries are its own
        "cpu": item.cpu,
        "memory": item.memory,
        "label": item.label,
        "retry": policy.model_dump(exclude_defaults=True) if policy else None,
    }
    entry.update((name, value) for name, value in fields.items() if value is not None)
    env: dict[str, Any] = dict(item.env)
    env.update((name, {"secret": secret, "version": version}) for name, secret, version in item.secret_env)
    env.update(
        (name, {WITHHELD: "a literal secret; not stored"} if withhold_secrets else {"value": value})
        for name, value in item.sensitive_env
    )
    if env:
        entry["env"] = env
    return entry


def save_spec(store: Store, batch: Batch) -> None:
    """Write ``<batch-id>/spec.json`` unless it exists (a resumed batch wrote it when it was created)."""
    head = {
        "schema": SPEC_SCHEMA,
        "batch_id": batch.batch_id,
        "spec_digest": batch.digest,
        "keep_jobs": batch.keep_jobs,
    }
    # One item per line, each entry encoded and dropped in turn: a 100,000-item spec as one document encoded
    # with ``indent`` (json's pure-Python encoder) peaked at about 1 KiB per item.
    entries = b",\n".join(
        json.dumps(spec_entry(item, withhold_secrets=True, retry=batch.retry)).encode() for item in batch.items
    )
    data = json.dumps(head, indent=1).removesuffix("\n}").encode() + b',\n "items": [\n' + entries + b"\n ]\n}"
    # A conflict: written when the batch was created, and batch.json already checked that the spec is the same.
    with contextlib.suppress(StoreConflict):
        store.write_if(batch.batch_id, SPEC_FILE, data, None)


# -- report.json, its item shards and report.html ------------------------------------------------------------


def shard_name(number: int) -> str:
    return f"{ITEMS_FOLDER}/{number:05d}.jsonl"


def reader(store: Store, batch_id: str) -> Callable[[str], bytes | None]:
    """How a stored report's items are read: a shard's bytes by its name in the batch's folder."""
    return lambda name: store.read(batch_id, name)


def write_items(
    store: Store, batch_id: str, items: Iterable[ItemResult], *, per_shard: int = SHARD_ITEMS, per_chunk: int = 1000
) -> tuple[list[ItemShard], Tally]:
    """Write ``items`` (in spec order) as the batch's shards as they come, each shard streamed ``per_chunk``
    lines at a time; the shards and their tally."""
    tally = Tally()
    shards: list[ItemShard] = []
    source = iter(items)
    upcoming = next(source, None)

    def lines(first: int) -> Iterator[bytes]:
        nonlocal upcoming
        chunk: list[bytes] = []
        while upcoming is not None and tally.total - first < per_shard:
            tally.add(upcoming)
            chunk.append(item_json(upcoming) + b"\n")
            upcoming = next(source, None)
            if len(chunk) >= per_chunk:
                yield b"".join(chunk)
                chunk = []
        if chunk:
            yield b"".join(chunk)

    while upcoming is not None:
        first, name = tally.total, shard_name(len(shards))
        store.write(batch_id, name, lines(first), content_type="application/x-ndjson")
        shards.append(ItemShard(name=name, first=first, count=tally.total - first))
    return shards, tally


def with_stored_items(store: Store, report: Report) -> Report:
    """``report`` with its items in the store, as a v2 report: written as shards unless they already are."""
    if report.item_shards is not None:
        return report
    shards, _ = write_items(store, report.batch_id, report.items)
    stored = StoredItems(shards, reader(store, report.batch_id))
    return report.model_copy(update={"schema_": SCHEMA, "item_shards": shards, "items": stored})


def store_report(store: Store, report: Report) -> tuple[Report, str, str | None]:
    """Write ``report`` as its batch's report.json, after its item shards (written here unless they are
    already); return it as written, where, and its generation when it replaced one. A report already stored
    there (the batch is resumed) is replaced only at the generation read, with the reruns it lists kept:
    ``fanout rerun`` listed them, and one listed meanwhile makes this read again."""
    batch_id = report.batch_id
    report = with_stored_items(store, report)
    for _ in range(RESERVE_ATTEMPTS):
        found = store.read_versioned(batch_id, REPORT_FILE)
        if found is None:  # no report yet, so no rerun can have listed itself in one
            return report, store.write(batch_id, REPORT_FILE, report.header_json()), None
        data, generation = found
        kept = report.model_copy(update={"reruns": _listed_reruns(data)})
        try:
            generation = store.write_if(batch_id, REPORT_FILE, kept.header_json(), generation)
        except StoreConflict:
            continue
        return kept, store.url(batch_id, REPORT_FILE), generation
    raise StoreError(f"{store.url(batch_id, REPORT_FILE)} changed {RESERVE_ATTEMPTS} times while it was written")


def _listed_reruns(data: bytes) -> list[Rerun]:
    """The reruns a stored report lists; none when it is not a report this version can read."""
    try:
        return _RERUNS.validate_python(json.loads(data).get("reruns", []))
    except (ValueError, AttributeError):  # not JSON, not an object, or not reruns as this schema has them
        return []


def write_html(store: Store, report: Report, generation: str | None) -> None:
    """Write the batch's report.html from ``report``, which is report.json at ``generation``; when that is
    known, again from the stored report.json while it changed meanwhile (a rerun listed itself), so that the
    last page written shows the last report."""
    for _ in range(RESERVE_ATTEMPTS):
        store.write(report.batch_id, HTML_FILE, render_html_chunks(report), content_type="text/html")
        found = None if generation is None else store.read_versioned(report.batch_id, REPORT_FILE)
        if found is None or found[1] == generation:
            return
        data, generation = found
        report = Report.from_json(data, read=reader(store, report.batch_id))
    log.warning("%s may not show every rerun: report.json kept changing", store.url(report.batch_id, HTML_FILE))


# -- a finished batch run again --------------------------------------------------------------------------


def standing_report(store: Store, batch: Batch, launches: int) -> Report | None:
    """The stored report of this batch if it ran to its end (in ``launches`` launches), else None."""
    data = store.read(batch.batch_id, REPORT_FILE)
    if data is None:
        return None
    try:
        report = Report.from_json(data, read=reader(store, batch.batch_id))
    except ValueError:  # unreadable or another schema: resume from the executions instead
        return None
    return report if report.ran_to_end(batch.digest, launches) else None


def finished_notice(report: Report, url: str, spec: str | None) -> str:
    """What running a finished batch again says, on the command line and as the flow run's state message."""
    when = report.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    failed = report.summary.not_succeeded
    outcome = f"{failed:,} of {report.summary.total:,} items did not succeed" if failed else "every item succeeded"
    spec_arg = spec if isinstance(spec, str) and "\n" not in spec else "SPEC"
    return (
        f"batch {report.batch_id} already finished at {when} ({outcome}): nothing was launched.\n"
        f"report: {url}\n"
        f"to run it anew:        fanout run {spec_arg} --batch-id {new_batch_id()}\n"
        f"to rerun its failures: fanout rerun {url}"
    )


# -- a report opened by where it is -------------------------------------------------------------------------


@dataclass(frozen=True)
class Located:
    """A report read from where it lies: ``url`` its report.json (a gs:// URL or a resolved path), ``root``
    the report location (``--report-to``) that holds its batch folder, ``folder`` that folder's name."""

    report: Report
    url: str
    root: str
    folder: str


def open_report(location: str, storage_client: Any | None = None) -> Located:
    """The report at ``location``: a report.json, its batch folder, or a gs:// URL of either. Only report.json
    is read here (a v2 one is small); the items are read when iterated, one shard at a time. Raises
    ReportUnreadable (or StoreError from GCS) with where and why."""
    if location.startswith("gs://"):
        url = location if location.endswith(".json") else location.rstrip("/") + "/" + REPORT_FILE
        if storage_client is None:
            raise ReportUnreadable(f"{url}: reading gs:// needs a storage client")
        data = read_url(url, storage_client, limit=MAX_REPORT_BYTES)
        root, _, folder = url.rpartition("/")[0].rpartition("/")
    else:
        data, path = _read_local(location)
        url, root, folder = str(path), str(path.parent.parent), path.parent.name
    items = reader(open_store(root, storage_client), folder)
    return Located(parse_report(data, url, items), url, root, folder)


def parse_report(data: bytes, url: str, items: Callable[[str], bytes | None]) -> Report:
    """``data`` as a report whose item shards ``items`` reads, or ReportUnreadable naming the first field that
    is not as the schema has it."""
    try:
        return Report.from_json(data, read=items)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ReportUnreadable(f"{url} is not a fanout report: {where + ': ' if where else ''}{error['msg']}") from None


def _read_local(location: str) -> tuple[bytes, Path]:
    """A report file's bytes and resolved path; a folder means its report.json. Only a regular file, read to
    the limit at most: /dev/zero or a FIFO would be read for ever."""
    path = Path(location).expanduser()
    if path.is_dir():
        path = path / REPORT_FILE
    try:
        return read_regular_file(path, MAX_REPORT_BYTES), path.resolve()
    except FileNotFoundError:
        raise ReportUnreadable(
            f"{path}: no such report; give a report.json, its batch folder or gs://BUCKET/.../report.json"
        ) from None
    except NotReadable as exc:
        raise ReportUnreadable(f"{exc}; give report.json or its folder") from None
    except OSError as exc:
        raise ReportUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
