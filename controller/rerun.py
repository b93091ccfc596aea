"""Rerun what did not succeed: a new batch of a finished batch's items, linked to it both ways.

Every batch stores its spec beside ``batch.json`` when it opens (``spec.json``, controller.batchfolder):
each item's entry with the defaults applied and its key, literal secret values withheld (replaced by a
marker, never by the value or anything computed from it). A rerun reads the parent's report for the items in the chosen
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
from typing import Any

from controller.batchfolder import (
    HTML_FILE,
    REPORT_FILE,
    RESERVE_ATTEMPTS,
    SPEC_FILE,
    WITHHELD,
    ReportUnreadable,
    open_report,
    parse_report,
    reader,
    spec_entry,
    with_stored_items,
    write_html,
)
from controller.catalog import Catalog
from controller.outcomes import INTERIM_PROBLEM
from controller.ownership import BATCH_STATE, BatchOwned, refuse_if_held
from controller.report import BatchLink, ItemState, ItemsUnreadable, Report, Rerun
from controller.spec import Batch, load_batch
from controller.store import Store, StoreConflict, StoreError, open_store

DEFAULT_STATES = tuple(state for state in ItemState if state is not ItemState.SUCCEEDED)

log = logging.getLogger(__name__)


class RerunError(Exception):
    """A rerun cannot start: the report, the states or the spec are not usable. Nothing was launched."""


class NothingToRerun(Exception):
    """No item of the report is in the states asked for."""


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


@contextlib.contextmanager
def _unreadable_as_rerun_error() -> Iterator[None]:
    try:
        yield
    except ReportUnreadable as exc:
        raise RerunError(str(exc)) from None


def open_parent(location: str, storage_client: Any | None = None) -> Parent:
    """The report at ``location`` (report.json, its folder, or a gs:// URL of either), checked."""
    with _unreadable_as_rerun_error():
        found = open_report(location, storage_client)
    report, url = found.report, found.url
    if report.batch_id != found.folder:
        raise RerunError(
            f"{url} is the report of batch {report.batch_id!r} but lies in folder {found.folder!r}; a rerun reads "
            "the batch's spec.json beside its report, so give the report where its batch wrote it"
        )
    return Parent(report, url, found.root, open_store(found.root, storage_client))


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


def _stored_entries(parent: Parent, wanted: set[str]) -> tuple[dict[str, Any], bool]:
    """The parent's stored spec entries of the ``wanted`` keys, by key, and its keep_jobs. save_spec writes
    one entry per line, so the entries are read line by line and only the wanted ones kept: a rerun of a
    million-item batch's few failures never holds a million entries."""
    where = parent.store.url(parent.batch_id, SPEC_FILE)
    data = parent.store.read(parent.batch_id, SPEC_FILE)
    if data is None:
        raise RerunError(
            f"{where} does not exist (the batch ran before fanout stored specs); give its spec with --spec FILE"
        )
    try:
        head, entries = _spec_lines(data)
        kept = {}
        for entry in entries:
            if entry["key"] in wanted:
                kept[entry["key"]] = entry
        digest, keep_jobs = head["spec_digest"], bool(head["keep_jobs"])
    except (ValueError, TypeError, KeyError):
        raise RerunError(f"{where} is not a stored fanout spec") from None
    if digest != parent.report.spec_digest:
        raise RerunError(f"{where} belongs to another spec than {parent.url}; give the batch's spec with --spec FILE")
    return kept, keep_jobs


_ITEMS_LINE = b'\n "items": [\n'


def _spec_lines(data: bytes) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """spec.json's head and its entries, parsed one line at a time; a document laid out otherwise is
    parsed whole."""
    cut = data.find(_ITEMS_LINE)
    if cut < 0 or not data.endswith(b"\n ]\n}"):
        document = json.loads(data)
        return document, iter(document["items"])
    head = json.loads(data[:cut].removesuffix(b",") + b"\n}")
    body = data[cut + len(_ITEMS_LINE) : -len(b"\n ]\n}")]
    return head, (json.loads(line.removesuffix(b",")) for line in body.split(b"\n") if line)


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
        entries = [spec_entry(i, withhold_secrets=False, retry=spec.retry) for i in spec.items if i.key in wanted]
        return entries, spec.keep_jobs
    stored, keep_jobs = _stored_entries(parent, set(keys))
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
            with _unreadable_as_rerun_error():
                current = parse_report(data, self.parent.url, reader(where, self.parent.batch_id))
            updated = change(current)
            if updated is None:
                return
            updated = with_stored_items(where, updated)  # a v1 parent's items move to shards: report.json stays small
            try:
                generation = where.write_if(self.parent.batch_id, REPORT_FILE, updated.header_json(), generation)
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


def _refuse_unless_ended(parent: Parent) -> None:
    """A rerun starts from a batch that has ended: never while its controller still runs it (its lease is
    live: its executions may still end well), nor from an interim report (written as the batch was
    interrupted; what it lists unfinished may still run). Raises RerunError saying what to do instead."""
    if INTERIM_PROBLEM in parent.report.problems:
        raise RerunError(
            f"{parent.url} is an interim report: batch {parent.batch_id} was interrupted and its controller "
            "stopped before writing the final one, so executions it lists unfinished may still run. Run the "
            f"batch's spec again with --batch-id {parent.batch_id} and the same --report-to: it resumes the "
            "batch, attaches to what still runs and writes the final report; then rerun that"
        )
    data = parent.store.read(parent.batch_id, BATCH_STATE)
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return  # a batch from before batch.json, or none to read: nobody can be holding it
    try:
        refuse_if_held(record, parent.batch_id, datetime.now(UTC))
    except BatchOwned as exc:
        raise RerunError(
            f"{exc}. Its report ({parent.url}) is not final while it runs: rerun it once that run has ended"
        ) from None


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
    _refuse_unless_ended(parent)
    chosen = parse_states(states)
    try:  # streamed: only the keys chosen are kept
        keys = [item.key for item in parent.report.items if item.state in chosen]
    except ItemsUnreadable as exc:
        raise RerunError(f"{parent.url}: {exc}") from None
    if not keys:
        counts = ", ".join(f"{n:,} {s}" for s, n in parent.report.summary.by_state.items() if n) or "no items"
        raise NothingToRerun(
            f"nothing to rerun: no item of batch {parent.batch_id} is {' or '.join(chosen)} ({counts}); "
            f"report: {parent.url}"
        )
    entries, keep_jobs = _entries(parent, keys, spec, spec_name)
    return RerunPlan(parent, chosen, entries, keep_jobs)


__all__ = [
    "NothingToRerun",
    "RerunError",
    "RerunPlan",
    "StartedRerun",
    "open_parent",
    "parse_states",
    "plan_rerun",
    "withdrawn_unless_opened",
]
