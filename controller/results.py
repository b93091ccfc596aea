"""Item results: the JSON value a task wrote to ``$FANOUT_RESULT_FILE``, gathered beside the report.

Each task's value lies at ``<report-to>/<batch-id>/results/<item-key>/<task-index>.json`` (the task's index
within its item: 0 for a packed item or an item of one task), put there by the runner (packed tasks) or by
the program itself. After the batch, the collector lists that folder once, reads the values one at a time
and fills ``items[].result``: the value, or a list by task index (null where a task wrote nothing) for an
item of several tasks. A value over ``INLINE_MAX_BYTES`` stays where it is and ``result_uri`` says where (the
object, or the item's folder for an item of several tasks); one over ``MAX_BYTES``, not JSON, or that no
report could hold (a number out of JSON's range, a lone surrogate, nesting over ``MAX_DEPTH``) is refused with
a reason in the item, and a value that fails in any other way costs that item's result, never the others'.
Literal secrets are masked like in any other output, in the stored object too.
``results.jsonl`` beside the report holds one line per item in spec order; ``read_results`` streams it back.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from controller.plan import ENV_RESULT_DIR, LOCAL_RESULTS_BUCKET, Plan, ResultsVolume
from controller.redact import MASK
from controller.report import ItemResult, ItemState
from controller.store import Store, StoreError

FOLDER = "results"
JSONL = "results.jsonl"
INLINE_MAX_BYTES = 64 * 1024
MAX_BYTES = 10 * 1024 * 1024
# Nesting levels a result may have. The report is read back (resume, rerun, ``fanout report show``) by
# pydantic-core, whose JSON parser stops a little over 200 levels, and the value sits 3 levels down in it.
MAX_DEPTH = 100

Found = dict[str, dict[int, tuple[str, int]]]
"""Item key -> task index -> (object name relative to the batch, size in bytes)."""


def result_name(key: str, task: int) -> str:
    """Where one task's value lies, relative to the batch."""
    return f"{FOLDER}/{key}/{task}.json"


def volume(store: Store, batch_id: str, local_buckets: Mapping[str, str]) -> ResultsVolume | None:
    """The batch's results folder as one-off jobs mount it: its bucket and folder. A local report folder has
    no bucket on Google Cloud; an emulator that maps ``LOCAL_RESULTS_BUCKET`` to it (``local_buckets``, from
    ``fanout emulator --bucket-dir``) stands it in; else None: no mount, and one-off items return no result."""
    url = store.url(batch_id, FOLDER)
    if url.startswith("gs://"):
        bucket, _, folder = url.removeprefix("gs://").partition("/")
        return ResultsVolume(bucket, folder)
    mapped = local_buckets.get(LOCAL_RESULTS_BUCKET)
    if mapped is None or Path(mapped).resolve() != Path(store.url(batch_id)).parent.resolve():
        return None
    return ResultsVolume(LOCAL_RESULTS_BUCKET, f"{batch_id}/{FOLDER}")


FOLDER_MARKER = ".fanout-folder"  # an empty object that makes an item's folder exist; the collector skips it


def make_item_folders(store: Store, plan: Plan) -> None:
    """The folders one-off tasks write ``<task>.json`` into, made before they run: a file cannot be created
    in a folder that does not exist, and in Cloud Storage a folder exists (for a mount with implicit-dirs)
    once an object is named inside it, so each item's folder gets an empty ``FOLDER_MARKER`` object."""
    batch_id = plan.batch.batch_id
    folders = [
        f"{FOLDER}/{launch.items[0].key}"
        for launch in plan.launches
        if any(name == ENV_RESULT_DIR for name, _ in launch.env)
    ]
    if not folders:
        return
    if store.url(batch_id).startswith("gs://"):
        store.write_many(batch_id, [(f"{folder}/{FOLDER_MARKER}", b"") for folder in folders])
        return
    for folder in folders:
        Path(store.url(batch_id, folder)).mkdir(parents=True, exist_ok=True)


def list_results(store: Store, batch_id: str) -> Found:
    """Every result object of the batch, from one listing; names only, no value is read."""
    found: Found = {}
    for name, size in store.list_sizes(batch_id, FOLDER):
        # Keys may hold "/", the task index never does: the last segment is the index.
        key, slash, file = name.removeprefix(FOLDER + "/").rpartition("/")
        task, _, ext = file.partition(".")
        if slash and key and ext == "json" and task.isdigit():
            found.setdefault(key, {})[int(task)] = (name, size)
    return found


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """A JSON number as a float; one out of a float's range (``1e400``) would be written back as
    ``Infinity``, which is not JSON."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of the range of a JSON number")
    return number


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` levels deep (without recursion: the value
    may be nested deeper than Python's recursion limit)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def scrub(value: Any, redact: Callable[[str], str]) -> Any:
    """``value`` with every string (keys too) redacted, and a number that spells a secret masked whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k): scrub(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, redact) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and redact(str(value)) != str(value):
        return MASK
    return value


@dataclass(frozen=True)
class _Value:
    value: Any = None
    by_uri: bool = False  # valid, too large to inline: read it where it lies
    error: str | None = None


def _load(store: Store, batch_id: str, name: str, size: int, redact: Callable[[str], str]) -> _Value:
    where = store.url(batch_id, name)
    if size > MAX_BYTES:
        return _Value(error=f"result refused: {where} holds {size} bytes, over the limit of {MAX_BYTES}")
    data = store.read(batch_id, name)
    if data is None:
        return _Value()
    try:
        value = json.loads(data, parse_constant=_no_constants, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        _mask_where_it_lies(store, batch_id, name, data, redact)
        return _Value(error=f"result refused: {where} is not JSON ({type(exc).__name__}: {redact(str(exc))})")
    if _deeper_than(value, MAX_DEPTH):
        _mask_where_it_lies(store, batch_id, name, data, redact)
        return _Value(error=f"result refused: {where} is nested deeper than {MAX_DEPTH} levels")
    clean = scrub(value, redact)
    try:
        text = json.dumps(clean, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # "\ud800" parses, but no UTF-8 text (report.json, results.jsonl) can hold it
        _mask_where_it_lies(store, batch_id, name, data, redact)
        return _Value(error=f"result refused: {where} holds a lone surrogate (a \\uD800-\\uDFFF escape), not text")
    if clean != value:  # the object stays readable beside the report: mask the secret there too
        store.write(batch_id, name, text)
    if len(data) <= INLINE_MAX_BYTES:
        return _Value(value=clean)
    return _Value(by_uri=True)


def _mask_where_it_lies(store: Store, batch_id: str, name: str, data: bytes, redact: Callable[[str], str]) -> None:
    """Mask literal secrets in a refused object, as text: it is not a JSON value to scrub, but it stays beside
    the report. Bytes that are not UTF-8 pass through unchanged."""
    text = data.decode("utf-8", "surrogateescape")
    masked = redact(text)
    if masked != text:
        store.write(batch_id, name, masked.encode("utf-8", "surrogateescape"))


def _with_result(
    item: ItemResult,
    found: dict[int, tuple[str, int]],
    tasks: int,
    store: Store,
    batch_id: str,
    redact: Callable[[str], str],
) -> ItemResult:
    values = {task: _load(store, batch_id, name, size, redact) for task, (name, size) in sorted(found.items())}
    several = tasks > 1 or max(values) > 0
    errors = [f"task {task}: {v.error}" if several else v.error for task, v in values.items() if v.error]
    reason = "; ".join([*([item.reason] if item.reason else []), *errors]) or None
    if several:
        result: Any = [values[t].value if t in values else None for t in range(max(tasks, max(values) + 1))]
        uri = store.url(batch_id, f"{FOLDER}/{item.key}") if any(v.by_uri for v in values.values()) else None
    else:
        result = values[0].value
        uri = store.url(batch_id, found[0][0]) if values[0].by_uri else None
    return replace(item, result=result, result_uri=uri, reason=reason)


def with_result(
    store: Store, batch_id: str, item: ItemResult, tasks: int, redact: Callable[[str], str]
) -> ItemResult:
    """One item with its result filled in, read as soon as it ended: a listing of its own folder only."""
    mine = _item_objects(store, batch_id, item.key)
    return _with_result(item, mine, tasks, store, batch_id, redact) if mine else item


def collect_results(
    store: Store,
    batch_id: str,
    items: list[ItemResult],
    task_counts: Mapping[str, int],
    redact: Callable[[str], str],
    *,
    readers: int = 16,
    found: Found | None = None,
) -> list[ItemResult]:
    """``items`` with their results filled in. One listing for the batch (``found``, when the caller listed
    it once for all its slices of items); values are read ``readers`` at a time, and one over 64 KiB is
    dropped as soon as it is checked, so no more than that many are in memory."""
    found = list_results(store, batch_id) if found is None else found
    if not found:
        return items

    def one(item: ItemResult) -> ItemResult:
        mine = found.get(item.key)
        if not mine:
            return item
        try:
            return _with_result(item, mine, task_counts.get(item.key, 1), store, batch_id, redact)
        except Exception as exc:  # a read that failed, a value nobody foresaw: this item's result only
            problem = f"result unavailable: {type(exc).__name__}: {redact(str(exc))}"
            return replace(item, reason="; ".join([*([item.reason] if item.reason else []), problem]))

    with ThreadPoolExecutor(max_workers=readers) as pool:
        return list(pool.map(one, items))


def jsonl_chunks(items: Iterable[ItemResult], items_per_chunk: int = 1000) -> Iterator[bytes]:
    """``results.jsonl``: ``{"key", "state", "result"}`` (and ``result_uri`` when set) per item, in order."""
    lines: list[bytes] = []
    for item in items:
        record: dict[str, Any] = {"key": item.key, "state": str(item.state), "result": item.result}
        if item.result_uri:
            record["result_uri"] = item.result_uri
        lines.append(_jsonl_line(record))
        if len(lines) >= items_per_chunk:
            yield b"".join(lines)
            lines = []
    if lines:
        yield b"".join(lines)


def _jsonl_line(record: dict[str, Any]) -> bytes:
    """One strict JSON line; a result no JSON can hold (``collect_results`` refuses those it reads, but an
    item's result may come from elsewhere) is written null rather than costing the file."""
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode() + b"\n"
    except (ValueError, UnicodeEncodeError, RecursionError):
        return json.dumps({**record, "result": None}, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class ResultRecord(NamedTuple):
    """One item's line of ``results.jsonl``."""

    key: str
    state: ItemState
    result: Any
    result_uri: str | None = None


def read_results(location: str, storage_client: Any | None = None, *, fetch: bool = True) -> Iterator[ResultRecord]:
    """The results of one batch, item by item in spec order, streamed from ``results.jsonl``.

    ``location`` is the batch's folder or ``gs://bucket/prefix/<batch-id>`` (or ``results.jsonl`` itself);
    ``gs://`` needs a ``google.cloud.storage.Client``. With ``fetch``, a value kept out of the report (over
    64 KiB) is read from its ``result_uri`` when its record comes, so one such value at a time is in memory.
    """
    url = location if location.endswith(".jsonl") else location.rstrip("/") + "/" + JSONL
    with _open(url, storage_client) as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = ResultRecord(**json.loads(line))
                record = record._replace(state=ItemState(record.state))
            except (ValueError, TypeError) as exc:
                raise StoreError(f"{url} line {number} is not a result record: {exc}") from None
            if fetch and record.result_uri:
                record = record._replace(result=_fetch(record, storage_client))
            yield record


class Landed(NamedTuple):
    """A task's value as it lands in ``results/`` while its batch runs: its item's state is not known yet."""

    key: str
    task: int
    result: Any


def _batch_store(location: str, storage_client: Any | None) -> tuple[Store, str]:
    """The store and batch id of a batch's folder, ``gs://bucket/prefix/<batch-id>`` or its report.json."""
    folder = location.rstrip("/")
    if folder.endswith(("/report.json", "/" + JSONL)):
        folder = folder.rsplit("/", 1)[0]
    root, slash, batch_id = folder.rpartition("/")
    if not slash or not batch_id:
        raise StoreError(f"{location!r} is not a batch's folder: give <report-to>/<batch-id> or its report.json")
    from controller.store import open_store

    return open_store(root if root not in ("", "gs:/") else ".", storage_client), batch_id


def result_of(location: str, key: str, storage_client: Any | None = None) -> Any:
    """One item's value, by key, read from the batch's ``results/`` whether the batch still runs or ended:
    the JSON its task wrote, a list by task index for an item of several tasks, or None while none landed."""
    store, batch_id = _batch_store(location, storage_client)
    found = {task: name for task, (name, _size) in _item_objects(store, batch_id, key).items()}
    if not found:
        return None
    values = {task: json.loads(store.read(batch_id, name) or b"null") for task, name in found.items()}
    return values[0] if list(values) == [0] else [values.get(t) for t in range(max(values) + 1)]


def _item_objects(store: Store, batch_id: str, key: str) -> dict[int, tuple[str, int]]:
    mine: dict[int, tuple[str, int]] = {}
    for name, size in store.list_sizes(batch_id, f"{FOLDER}/{key}"):
        owner, _, file = name.removeprefix(FOLDER + "/").rpartition("/")
        task, _, ext = file.partition(".")
        if owner == key and ext == "json" and task.isdigit():
            mine[int(task)] = (name, size)
    return mine


def follow_results(
    location: str,
    storage_client: Any | None = None,
    *,
    follow: bool = False,
    poll_seconds: float = 2.0,
    timeout_seconds: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Landed | ResultRecord]:
    """A batch's results by its location, running or ended, streamed (the report is never loaded).

    While the batch runs, each value that lands in ``results/`` is a ``Landed`` as it appears (one listing
    of the folder a poll, each value read once); without ``follow`` what has landed so far, then the end.
    Once the batch ended (``results.jsonl`` is there), each item's final ``ResultRecord`` in spec order.
    With ``follow``, waits for that end (and for a batch not started yet), at most ``timeout_seconds`` (then
    StoreError).
    """
    store, batch_id = _batch_store(location, storage_client)
    from controller.ownership import BATCH_STATE

    # Followed, a batch not there yet is one about to start; else there is nothing to read.
    if not follow and store.read(batch_id, JSONL) is None and store.read(batch_id, BATCH_STATE) is None:
        raise StoreError(f"no batch at {store.url(batch_id)}: neither {BATCH_STATE} nor {JSONL} is there")
    seen: set[str] = set()
    deadline = None if timeout_seconds is None else clock() + timeout_seconds
    while store.read(batch_id, JSONL) is None:
        for name, size in sorted(store.list_sizes(batch_id, FOLDER)):
            key, _, file = name.removeprefix(FOLDER + "/").rpartition("/")
            task, _, ext = file.partition(".")
            if name in seen or not key or ext != "json" or not task.isdigit():
                continue
            seen.add(name)
            if size > MAX_BYTES:
                continue  # the report will say why it was refused
            data = store.read(batch_id, name)
            if data is not None:
                yield Landed(key, int(task), json.loads(data, parse_constant=_no_constants))
        if not follow:
            return
        if deadline is not None and clock() >= deadline:
            raise StoreError(f"batch {batch_id} did not end within {timeout_seconds:.0f}s")
        sleep(poll_seconds)
    yield from read_results(store.url(batch_id, JSONL), storage_client)


def _open(url: str, storage_client: Any | None) -> Any:
    if url.startswith("gs://"):
        from google.api_core import exceptions as gexc

        if storage_client is None:
            raise StoreError("reading gs:// needs a storage client")
        bucket, _, name = url.removeprefix("gs://").partition("/")
        blob = storage_client.bucket(bucket).blob(name)
        try:
            blob.reload()
        except gexc.NotFound:
            raise StoreError(f"{url} does not exist") from None
        return blob.open("rb")  # a streaming reader: it fetches the object a chunk at a time
    try:
        return Path(url).expanduser().open("rb")
    except OSError as exc:
        raise StoreError(f"cannot read {url}: {exc.strerror or exc}") from None


def _read_json(url: str, storage_client: Any | None) -> Any:
    """The JSON at ``url``, or None when there is none (a task of the item that wrote nothing)."""
    if url.startswith("gs://"):
        from google.api_core import exceptions as gexc

        bucket, _, name = url.removeprefix("gs://").partition("/")
        try:
            return json.loads(storage_client.bucket(bucket).blob(name).download_as_bytes())  # type: ignore[union-attr]
        except gexc.NotFound:
            return None
    path = Path(url)
    return json.loads(path.read_bytes()) if path.is_file() else None


def _fetch(record: ResultRecord, storage_client: Any | None) -> Any:
    uri = record.result_uri or ""
    if not isinstance(record.result, list):
        return _read_json(uri, storage_client)
    # An item of several tasks: its folder; the tasks not inline are the nulls of its list.
    return [
        _read_json(f"{uri}/{task}.json", storage_client) if value is None else value
        for task, value in enumerate(record.result)
    ]


__all__ = [
    "INLINE_MAX_BYTES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "ResultRecord",
    "collect_results",
    "follow_results",
    "jsonl_chunks",
    "list_results",
    "make_item_folders",
    "read_results",
    "result_name",
    "result_of",
    "volume",
    "with_result",
]
