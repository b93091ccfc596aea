"""``CloudRunJob``: the prefect-gcp 0.5 block's ``run()`` call on Prefect 3, as a batch of this controller.

prefect-gcp's ``prefect_gcp.cloud_run.CloudRunJob`` (a Prefect 2 infrastructure block) is gone with Prefect 3.
Flows written for it keep working with ``from controller import CloudRunJob``: the same fields, and ``run()``
starts the command as a one-item batch of one-off container runs through ``controller.flow.fan_out`` (so it
is launched, watched, reported and cleaned up as every batch is); ``map()`` runs one item per args list.

Each call is one ``fan-out`` flow run: a subflow run when called inside a flow, so the caller's flow run
shows it with its launch task runs and its report artifact, and a flow run of its own otherwise.

``run()`` and ``map()`` are sync-compatible, as prefect-gcp 0.5's were: in async code (an async flow or any
coroutine) they return an awaitable, ``await job.run()``, which runs the batch in a worker thread so the event
loop goes on; in sync code they return the value. ``imap()`` streams each run's result as it ends
(``controller.stream``), with ``for`` or ``async for``.

Where it runs: a ``FANOUT_EMULATOR_HOST`` emulator if set; else the project of the ``GcpCredentials`` block
(its ``project``, which prefect-gcp fills from the service-account key or Application Default Credentials)
on Google Cloud; else an embedded local emulator, started for the call and stopped after it. The report goes
to ``report_to`` (default ``reports``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller import limits
from controller.catalog import Catalog
from controller.report import ItemResult, ItemState, Report
from controller.spec import load_batch, new_batch_id
from controller.stream import ResultStream
from controller.target import choose_target, serving

P = ParamSpec("P")
R = TypeVar("R")


def sync_compatible(method: Callable[P, R]) -> Callable[P, R]:
    """prefect-gcp 0.5's ``sync_compatible``: called where an event loop runs in this thread (async code), the
    call returns an awaitable that runs ``method`` in a worker thread (with the caller's context, so a Prefect
    flow run stays the parent); called anywhere else, it returns the value. Typed as the sync call."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return method(*args, **kwargs)
        return asyncio.to_thread(method, *args, **kwargs)  # type: ignore[return-value]

    return call


@dataclass(frozen=True)
class CloudRunJobResult:
    """What one run of the command did: one item of the batch's report."""

    item: ItemResult = field(repr=False)
    report_url: str

    @property
    def state(self) -> ItemState:
        return self.item.state

    @property
    def exit_code(self) -> int | None:
        return self.item.exit_code

    @property
    def log_tail(self) -> list[str]:
        return list(self.item.log_tail or [])

    @property
    def execution(self) -> str | None:
        """The Cloud Run execution's resource name."""
        return self.item.execution

    @property
    def duration_seconds(self) -> float | None:
        return self.item.duration_seconds

    @property
    def result(self) -> Any:
        """The JSON value the command wrote to ``$FANOUT_RESULT_FILE``, or None."""
        return self.item.result

    @property
    def status_code(self) -> int:
        """prefect-gcp's ``CloudRunJobResult.status_code``: 0 when the run succeeded, else 1."""
        return 0 if self.state.ok else 1


class CloudRunJob(BaseModel):
    """prefect-gcp 0.5's ``CloudRunJob`` fields; ``report_to`` and ``poll_interval`` are this controller's."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    image: str = Field(description="the container image")
    region: str = Field(description="the Cloud Run region")
    credentials: Any = Field(default=None, description="a prefect-gcp GcpCredentials block (saved, to run on GCP)")
    command: list[str] | None = Field(default=None, description="the container's command (required here)")
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cpu: int | None = Field(default=None, ge=1, description="vCPUs")
    memory: int | None = Field(default=None, ge=1)
    memory_unit: Literal["G", "Gi", "M", "Mi"] | None = None
    keep_job: bool = False
    timeout: int = Field(default=600, gt=0, le=3600, description="seconds per task")
    max_retries: int = Field(default=3, ge=0, le=10)
    report_to: str = Field(default="reports", description="a folder or gs:// prefix for the batch's report")
    poll_interval: float = Field(default=2.0, gt=0)

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        if problem := limits.image_problem(image):
            raise ValueError(problem)
        return image

    @field_validator("region")
    @classmethod
    def _region(cls, region: str) -> str:
        if not limits.REGION_RE.match(region):
            raise ValueError(f"{region!r} is not a Cloud Run region such as 'us-central1' or 'europe-west1'")
        return region

    @field_validator("report_to")
    @classmethod
    def _report_to(cls, report_to: str) -> str:
        if not report_to.strip():
            raise ValueError("give a folder or a gs://BUCKET/PREFIX for the report, not an empty string")
        if report_to.startswith("gs://") and not report_to.removeprefix("gs://").partition("/")[0]:
            raise ValueError(f"{report_to!r} names no bucket; use gs://BUCKET/PREFIX")
        return report_to

    @model_validator(mode="after")
    def _resources(self) -> CloudRunJob:
        """cpu and memory against Cloud Run's limits for jobs, before anything is sent."""
        cpu = None if self.cpu is None else str(self.cpu)
        memory = None if self.memory is None or self.memory_unit is None else f"{self.memory}{self.memory_unit}"
        problem = (
            (cpu and limits.cpu_problem(cpu))
            or (memory and limits.memory_problem(memory))
            or ((cpu or memory) and limits.resources_problem(cpu or "1", memory or "512Mi"))
        )
        if problem:
            raise ValueError(f"CloudRunJob cpu/memory: {problem}")
        return self

    @sync_compatible
    def run(self) -> CloudRunJobResult:
        """Run the command once and wait for it to end (``await`` it in async code)."""
        return self._map([self.args])[0]

    @sync_compatible
    def map(self, args_list: Sequence[Sequence[str] | None]) -> list[CloudRunJobResult]:
        """Run the command once per args list (None: ``args``), all in one batch; results in the same order
        (``await`` it in async code)."""
        return self._map(args_list)

    def imap(
        self,
        args_list: Sequence[Sequence[str] | None],
        *,
        order_outputs: bool = False,
        return_exceptions: bool = True,
    ) -> ResultStream[CloudRunJobResult]:
        """Run the command once per args list, all in one batch, and yield each run's result as soon as it
        ended: in completion order, or in ``args_list`` order with ``order_outputs``; a failed run is a result
        (``status_code`` 1) unless ``return_exceptions=False``, which raises ``controller.stream.ItemFailed``.
        Iterate it with ``for`` or, in async code, ``async for``."""
        spec = self._spec(args_list)

        def run(sink: Callable[[ItemResult], None]) -> tuple[Report, str]:
            with _target(self._project(), self.region, self.report_to) as (run_project, on_cloud):
                return self._fan_out(spec, run_project, on_cloud, on_result=sink)

        return ResultStream(
            run,
            convert=lambda item, url: CloudRunJobResult(item=item, report_url=url),
            report_url=f"{self.report_to.rstrip('/')}/{spec['batch_id']}/report.json",
            order_outputs=order_outputs,
            return_exceptions=return_exceptions,
        )

    def _map(self, args_list: Sequence[Sequence[str] | None]) -> list[CloudRunJobResult]:
        if not args_list:
            return []
        spec = self._spec(args_list)
        project = self._project()
        with _target(project, self.region, self.report_to) as (run_project, on_cloud):
            report, url = self._fan_out(spec, run_project, on_cloud)
        by_index = {item.index: item for item in report.items}
        return [CloudRunJobResult(item=by_index[i], report_url=url) for i in range(len(args_list))]

    def _spec(self, args_list: Sequence[Sequence[str] | None]) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "image": self.image,
            "command": self.command,
            "env": self.env or None,
            "timeout": self.timeout,
            "retries": self.max_retries,
        }
        if self.cpu is not None:
            defaults["cpu"] = str(self.cpu)
        if self.memory is not None:
            if self.memory_unit is None:
                raise ValueError("CloudRunJob.memory: give memory_unit too (G, Gi, M or Mi)")
            defaults["memory"] = f"{self.memory}{self.memory_unit}"
        items = [{"args": list(args)} if args is not None else {} for args in args_list]
        return {
            # Chosen here, so a stream can say where the report will be before the batch starts.
            "batch_id": new_batch_id(),
            "defaults": {k: v for k, v in defaults.items() if v is not None},
            "keep_jobs": self.keep_job,
            "items": items,
        }

    def _project(self) -> str | None:
        """The credentials block's project: prefect-gcp fills it from the key's ``project_id`` or from ADC."""
        project = getattr(self.credentials, "project", None)
        return str(project) if project else None

    def _credentials_block(self, on_cloud: bool) -> str | None:
        if not on_cloud or self.credentials is None:
            return None  # emulators take anonymous credentials
        name = getattr(self.credentials, "_block_document_name", None)
        if not name:
            raise ValueError(
                "CloudRunJob.credentials: save the GcpCredentials block first (block.save('NAME')) and pass "
                "GcpCredentials.load('NAME'): the flow run loads it by name"
            )
        return str(name)

    def _fan_out(
        self,
        spec: dict[str, Any],
        project: str,
        on_cloud: bool,
        *,
        on_result: Callable[[ItemResult], None] | None = None,
    ) -> tuple[Report, str]:
        from controller.flow import fan_out, prepared_batch, prepared_catalog, report_sink, result_sink

        catalog = Catalog({}, project=project, region=self.region)
        batch = load_batch(spec, catalog)
        captured: dict[str, Any] = {}
        tokens = [
            (prepared_batch, prepared_batch.set(batch)),
            (prepared_catalog, prepared_catalog.set(catalog)),
            (report_sink, report_sink.set(lambda report, url: captured.update(report=report, url=url))),
            (result_sink, result_sink.set(on_result)),
        ]
        try:
            # The flow run is named after the batch id, as every batch's is, and ends Failed when the command
            # did not succeed; the caller reads each item's result here, so its own flow run goes on.
            state = fan_out(
                batch=spec,
                project=project,
                region=self.region,
                batch_id=batch.batch_id,
                report_to=self.report_to,
                logs_for="all",
                poll_interval=self.poll_interval,
                gcp_credentials_block=self._credentials_block(on_cloud),
                return_state=True,
            )
            if "report" not in captured:
                state.result()  # type: ignore[union-attr]  # a crash before the report: raise what the flow raised
        finally:
            for var, token in tokens:
                var.reset(token)  # type: ignore[attr-defined]
        return captured["report"], captured["url"]


@contextlib.contextmanager
def _target(project: str | None, region: str, report_to: str) -> Iterator[tuple[str, bool]]:
    """(project, on Google Cloud): a configured emulator, the project, or an embedded emulator for the call."""
    target = choose_target(project, None, region=region, report_to=report_to)
    with serving(target):
        yield target.project, target.on_cloud


__all__ = ["CloudRunJob", "CloudRunJobResult"]
