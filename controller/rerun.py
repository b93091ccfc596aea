"""Rerun what did not succeed: a new batch of a finished batch's items, linked to it both ways.

Every batch stores its spec beside ``batch.json`` when it opens: ``spec.json`` (create-only), each item's
entry with the defaults applied and its key, literal secret values withheld (replaced by a marker, never by
the value or anything computed from it). A rerun reads the parent's report for the items in the chosen
states, takes their entries from ``spec.json`` (or from the spec file given again, which must be the very
spec the parent ran: the only way to pass withheld secrets) and runs them as a new batch
``<parent>-rerun-<n>``. The new report says ``rerun_of``; the parent's report lists the rerun under
``reruns``, added with a generation-matched write so that two reruns started at once are both listed and
get different ids.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from controller.catalog import Catalog
from controller.html_report import render_html_chunks
from controller.ownership import BATCH_STATE
from controller.report import BatchLink, ItemState, Report, Rerun
from controller.spec import Batch, Item, load_batch, new_batch_id
from controller.store import Store, StoreConflict, StoreError, open_store, read_url

SPEC_FILE = "spec.json"
SPEC_SCHEMA = "fanout.spec/v1"
REPORT_FILE = "report.json"
HTML_FILE = "report.html"
WITHHELD = "withheld"  # the key that marks a literal secret left out of spec.json
MAX_REPORT_BYTES = 2 * 1024**3
# Each lost race for the parent's report means another rerun listed itself meanwhile; only many reruns
# started at the same moment lose this often.
RESERVE_ATTEMPTS = 8
DEFAULT_STATES = tuple(state for state in ItemState if state is not ItemState.SUCCEEDED)
_RERUNS: TypeAdapter[list[Rerun]] = TypeAdapter(list[Rerun])

log = logging.getLogger(__name__)


class RerunError(Exception):
    """A rerun cannot start: the report, the states or the spec are not usable. Nothing was launched."""


class NothingToRerun(Exception):
    """No item of the report is in the states asked for."""


# -- spec.json: the entries every batch stores when it opens ---------------------------------------------


def spec_entry(item: Item, *, withhold_secrets: bool) -> dict[str, Any]:
    """The item as a spec entry with its defaults applied: run as it stands, it runs the item again."""
    entry: dict[str, Any] = {"key": item.key, "job": item.job} if item.job else {"key": item.key, "image": item.image}
    fields = {
        "command": list(item.command) if item.command is not None else None,
        "args": list(item.args) if item.args is not None else None,
        "task_count": item.task_count,
        "timeout": item.timeout_seconds,
        "retries": item.retries if item.job is None else None,  # a provisioned job's retries are its own
        "cpu": item.cpu,
        "memory": item.memory,
        "label": item.label,
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
    entries = b",\n".join(json.dumps(spec_entry(item, withhold_secrets=True)).encode() for item in batch.items)
    data = json.dumps(head, indent=1).removesuffix("\n}").encode() + b',\n "items": [\n' + entries + b"\n ]\n}"
    # A conflict: written when the batch was created, and batch.json already checked that the spec is the same.
    with contextlib.suppress(StoreConflict):
        store.write_if(batch.batch_id, SPEC_FILE, data, None)


# -- a finished batch run again --------------------------------------------------------------------------


def standing_report(store: Store, batch: Batch, launches: int) -> Report | None:
    """The stored report of this batch if it ran to its end (in ``launches`` launches), else None."""
    data = store.read(batch.batch_id, REPORT_FILE)
    if data is None:
        return None
    try:
        report = Report.from_json(data)
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


# -- the parent: its report, where it lies ---------------------------------------------------------------


@dataclass(frozen=True)
class Parent:
    """The batch being rerun: its report, the report's URL and the store its batch folder is in."""

    report: Report
    url: str
    root: str  # the report location (``--report-to``) that holds its batch folder
    store: Store

    @property
    def batch_id(self) -> str:
        return self.report.batch_id


def _parse_report(data: bytes, url: str) -> Report:
    try:
        return Report.from_json(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise RerunError(f"{url} is not a fanout report: {where + ': ' if where else ''}{error['msg']}") from None


def _read_local(location: str) -> tuple[bytes, Path]:
    path = Path(location).expanduser()
    if path.is_dir():
        path = path / REPORT_FILE
    if not path.is_file():  # also refuses a FIFO or /dev/zero, which would be read for ever
        raise RerunError(f"{path}: no such report; give a report.json, its batch folder or gs://BUCKET/.../report.json")
    if path.stat().st_size > MAX_REPORT_BYTES:
        raise RerunError(f"{path} is over {MAX_REPORT_BYTES:,} bytes, more than any fanout report")
    try:
        return path.read_bytes(), path.resolve()
    except OSError as exc:
        raise RerunError(f"cannot read {path}: {exc.strerror or exc}") from None


def open_parent(location: str, storage_client: Any | None = None) -> Parent:
    """The report at ``location`` (report.json, its folder, or a gs:// URL of either), checked."""
    if location.startswith("gs://"):
        url = location if location.endswith(".json") else location.rstrip("/") + "/" + REPORT_FILE
        if storage_client is None:
            raise RerunError(f"{url}: reading gs:// needs a storage client")
        data = read_url(url, storage_client, limit=MAX_REPORT_BYTES)
        root, _, folder = url.rpartition("/")[0].rpartition("/")
    else:
        data, path = _read_local(location)
        url, root, folder = str(path), str(path.parent.parent), path.parent.name
    report = _parse_report(data, url)
    if report.batch_id != folder:
        raise RerunError(
            f"{url} is the report of batch {report.batch_id!r} but lies in folder {folder!r}; a rerun reads the "
            "batch's spec.json beside its report, so give the report where its batch wrote it"
        )
    return Parent(report, url, root, open_store(root, storage_client))


def parse_states(states: str | Iterable[str] | None) -> tuple[ItemState, ...]:
    """``"failed,timed_out"`` (or a list of names) as item states; None: every state but succeeded."""
    if states is None:
        return DEFAULT_STATES
    names = states.split(",") if isinstance(states, str) else list(states)
    known = {str(state): state for state in ItemState}
    chosen: list[ItemState] = []
    for name in (str(n).strip().lower().replace("-", "_") for n in names):
        if name not in known:
            shown = name if len(name) <= 30 else name[:27] + "..."
            raise RerunError(f"--states: unknown state {shown!r}; the states are {', '.join(known)}")
        if known[name] not in chosen:
            chosen.append(known[name])
    if not chosen:
        raise RerunError(f"--states: name at least one state ({', '.join(known)})")
    return tuple(chosen)


# -- what the rerun runs ---------------------------------------------------------------------------------


def _stored_entries(parent: Parent) -> tuple[dict[str, Any], bool]:
    """The parent's stored spec entries by key, and its keep_jobs."""
    where = parent.store.url(parent.batch_id, SPEC_FILE)
    data = parent.store.read(parent.batch_id, SPEC_FILE)
    if data is None:
        raise RerunError(
            f"{where} does not exist (the batch ran before fanout stored specs); give its spec with --spec FILE"
        )
    try:
        document = json.loads(data)
        entries = {entry["key"]: entry for entry in document["items"]}
        digest, keep_jobs = document["spec_digest"], bool(document["keep_jobs"])
    except (ValueError, TypeError, KeyError):
        raise RerunError(f"{where} is not a stored fanout spec") from None
    if digest != parent.report.spec_digest:
        raise RerunError(f"{where} belongs to another spec than {parent.url}; give the batch's spec with --spec FILE")
    return entries, keep_jobs


def _withheld(entry: Mapping[str, Any]) -> list[str]:
    env = entry.get("env") or {}
    return [name for name, value in env.items() if isinstance(value, dict) and WITHHELD in value]


def _entries(parent: Parent, keys: list[str], spec: Batch | None, spec_name: str) -> tuple[list[dict[str, Any]], bool]:
    """The entries of the items to rerun, in spec order, with literal secrets from ``spec`` when given."""
    if spec is not None:
        if spec.digest != parent.report.spec_digest:
            raise RerunError(
                f"--spec {spec_name}: not the spec batch {parent.batch_id} ran (its digest differs); give that "
                "same file, unchanged"
            )
        wanted = set(keys)
        return [spec_entry(i, withhold_secrets=False) for i in spec.items if i.key in wanted], spec.keep_jobs
    stored, keep_jobs = _stored_entries(parent)
    missing = [key for key in keys if key not in stored]
    if missing:
        raise RerunError(f"{parent.url}: items {missing[:5]} are not in the batch's stored spec")
    secret = {key: names for key in keys if (names := _withheld(stored[key]))}
    if secret:
        shown = "; ".join(f"{key}: {', '.join(names)}" for key, names in list(secret.items())[:5])
        raise RerunError(
            f"{len(secret):,} item(s) to rerun need literal secret values that were never stored ({shown}); "
            "give the batch's spec file again with --spec FILE"
        )
    return [stored[key] for key in keys], keep_jobs


def rerun_batch_id(parent_id: str, n: int) -> str:
    """``<parent>-rerun-<n>``, the parent's id shortened so that the whole stays a valid batch id."""
    suffix = f"-rerun-{n}"
    return parent_id[: 40 - len(suffix)].rstrip("-") + suffix


@dataclass(frozen=True)
class RerunPlan:
    """A rerun checked and ready: what it runs; ``start`` gives it its id and lists it in the parent."""

    parent: Parent
    states: tuple[ItemState, ...]
    entries: list[dict[str, Any]]
    keep_jobs: bool

    @property
    def link(self) -> BatchLink:
        return BatchLink(batch_id=self.parent.batch_id, report=self.parent.url)

    def batch(self, catalog: Catalog, batch_id: str) -> Batch:
        spec = {"batch_id": batch_id, "keep_jobs": self.keep_jobs, "items": self.entries}
        return load_batch(spec, catalog)

    def candidate_id(self, store: Store | None, batch_id: str | None = None) -> str:
        """The id the rerun would get now: ``batch_id`` if given, else the first ``<parent>-rerun-<n>`` that
        neither the parent lists nor ``store`` (where the rerun's report goes, when known) holds."""
        if batch_id is not None:
            return batch_id
        listed = {rerun.batch_id for rerun in self.parent.report.reruns}
        n = len(listed) + 1
        while (candidate := rerun_batch_id(self.parent.batch_id, n)) in listed or (
            store is not None and store.read(candidate, BATCH_STATE) is not None
        ):
            n += 1
        return candidate

    def start(
        self, catalog: Catalog, store: Store, batch_id: str | None = None, now: Callable[[], datetime] | None = None
    ) -> StartedRerun:
        """List the rerun in the parent's report (a generation-matched write: a concurrent rerun makes this
        one read again and take the next id) and return it with its batch. A rerun already listed under
        ``batch_id`` (resumed) is not listed twice."""
        clock = now or (lambda: datetime.now(UTC))
        started: list[StartedRerun] = []

        def listed(current: Report) -> Report | None:
            plan = RerunPlan(replace(self.parent, report=current), self.states, self.entries, self.keep_jobs)
            new_id = plan.candidate_id(store, batch_id)
            if any(rerun.batch_id == new_id for rerun in current.reruns):
                started[:] = [StartedRerun(self, plan.batch(catalog, new_id), None)]
                return None
            entry = Rerun(
                batch_id=new_id,
                report=store.url(new_id, REPORT_FILE),
                states=list(self.states),
                items=len(self.entries),
                started_at=clock(),
            )
            started[:] = [StartedRerun(self, plan.batch(catalog, new_id), entry)]
            return current.model_copy(update={"reruns": [*current.reruns, entry]})

        self._update_parent(listed, "list itself")
        return started[0]

    def withdraw(self, entry: Rerun) -> None:
        """Take ``entry`` off the parent's reruns."""

        def unlisted(current: Report) -> Report | None:
            kept = [rerun for rerun in current.reruns if rerun != entry]
            return current.model_copy(update={"reruns": kept}) if len(kept) < len(current.reruns) else None

        self._update_parent(unlisted, "take a refused rerun off its list")

    def _update_parent(self, change: Callable[[Report], Report | None], what: str) -> None:
        """Write ``change`` of the parent's stored report (None: nothing to write), generation-matched: when
        another writer got there first, read again and change that. Then its report.html shows the change."""
        where = self.parent.store
        for _ in range(RESERVE_ATTEMPTS):
            found = where.read_versioned(self.parent.batch_id, REPORT_FILE)
            if found is None:
                raise RerunError(f"{self.parent.url} no longer exists")
            data, generation = found
            updated = change(_parse_report(data, self.parent.url))
            if updated is None:
                return
            try:
                generation = where.write_if(
                    self.parent.batch_id, REPORT_FILE, b"".join(updated.json_chunks()), generation
                )
            except StoreConflict:
                continue
            try:
                write_html(where, updated, generation)
            except Exception as exc:  # the page is a view of report.json, which stands: never a failed rerun
                log.warning("%s not written: %s", where.url(self.parent.batch_id, HTML_FILE), exc)
            return
        raise RerunError(f"{self.parent.url} changed {RESERVE_ATTEMPTS} times while this rerun tried to {what}")


@dataclass(frozen=True)
class StartedRerun:
    """A rerun listed in its parent's report: its plan, its batch, and the entry this run added to the list
    (None when the rerun was listed before: resumed under its id)."""

    plan: RerunPlan
    batch: Batch
    entry: Rerun | None

    @property
    def link(self) -> BatchLink:
        return self.plan.link

    def opened(self, store: Store) -> bool:
        """Whether ``store`` holds this batch's batch.json, of its spec: the batch was opened to run."""
        record = store.read(self.batch.batch_id, BATCH_STATE)
        try:
            return record is not None and json.loads(record).get("spec_digest") == self.batch.digest
        except (ValueError, AttributeError):  # not JSON, or not an object: no batch of this spec
            return False


@contextlib.contextmanager
def withdrawn_unless_opened(started: StartedRerun | None, store: Store) -> Iterator[None]:
    """Around running a rerun (``started``; None: not a rerun, nothing to do): when that raises before its
    batch was opened (its id is another batch's, its input is bad), the entry this run listed is taken off
    the parent's reruns again. Whether it could be is a warning, never a second error."""
    try:
        yield
    except BaseException:
        if started is not None and started.entry is not None and not started.opened(store):
            try:
                started.plan.withdraw(started.entry)
            except (RerunError, StoreError) as exc:
                log.warning("%s stays listed as a rerun of %s: %s", started.batch.batch_id, started.link.batch_id, exc)
        raise


def plan_rerun(
    location: str,
    *,
    states: str | Iterable[str] | None = None,
    spec: Batch | None = None,
    spec_name: str = "",
    storage_client: Any | None = None,
) -> RerunPlan:
    """Check a rerun without writing anything. Raises RerunError (bad input, nothing launched) or
    NothingToRerun."""
    parent = open_parent(location, storage_client)
    chosen = parse_states(states)
    keys = [item.key for item in parent.report.items if item.state in chosen]
    if not keys:
        counts = ", ".join(f"{n:,} {s}" for s, n in parent.report.summary.by_state.items() if n) or "no items"
        raise NothingToRerun(
            f"nothing to rerun: no item of batch {parent.batch_id} is {' or '.join(chosen)} ({counts}); "
            f"report: {parent.url}"
        )
    entries, keep_jobs = _entries(parent, keys, spec, spec_name)
    return RerunPlan(parent, chosen, entries, keep_jobs)


def rerun(
    report: str,
    states: str | Iterable[str] | None = None,
    *,
    spec: str | dict[str, Any] | None = None,
    **parameters: Any,
) -> Any:
    """Rerun a finished batch's items in ``states`` (default: every state but succeeded) as a new batch,
    through the ``fan_out`` flow: a flow run of its own. ``report`` is a report.json, its folder or a gs://
    URL; ``spec`` the batch's spec, needed only for items with literal secrets; ``parameters`` are
    ``fan_out``'s (``report_to`` defaults to the parent's report location). Returns what ``fan_out`` does: the
    summary, or it raises ``ItemsFailed`` when rerun items fail again (unless ``fail_on_item_failure=False``)."""
    from controller.flow import fan_out

    listed = None if states is None else [str(s) for s in (states.split(",") if isinstance(states, str) else states)]
    return fan_out(batch=spec, rerun_of=report, rerun_states=listed, **parameters)


# -- a report written again keeps its links ----------------------------------------------------------------


def store_report(store: Store, report: Report) -> tuple[Report, str, str | None]:
    """Write ``report`` as its batch's report.json; return it as written, where, and its generation when it
    replaced one. A report already stored there (the batch is resumed) is replaced only at the generation
    read, with the reruns it lists kept: ``fanout rerun`` listed them, and one listed meanwhile makes this
    read again."""
    batch_id = report.batch_id
    for _ in range(RESERVE_ATTEMPTS):
        found = store.read_versioned(batch_id, REPORT_FILE)
        if found is None:  # no report yet, so no rerun can have listed itself in one: streamed, never joined
            return report, store.write(batch_id, REPORT_FILE, report.json_chunks()), None
        data, generation = found
        kept = report.model_copy(update={"reruns": _listed_reruns(data)})
        try:
            generation = store.write_if(batch_id, REPORT_FILE, b"".join(kept.json_chunks()), generation)
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
        report = Report.from_json(data)
    log.warning("%s may not show every rerun: report.json kept changing", store.url(report.batch_id, HTML_FILE))


__all__ = [
    "NothingToRerun",
    "RerunError",
    "RerunPlan",
    "StartedRerun",
    "finished_notice",
    "open_parent",
    "parse_states",
    "plan_rerun",
    "rerun",
    "save_spec",
    "standing_report",
    "store_report",
    "withdrawn_unless_opened",
    "write_html",
]
