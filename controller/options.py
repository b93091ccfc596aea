"""Every option of a run, declared once.

``RunOptions`` is the one place an option is declared: its name, type, default, help, environment variable,
command-line flag and limits. The ``fanout run``/``fanout plan`` flags, the ``fan_out`` flow's parameters
(with the descriptions the Prefect UI shows) and the values the runner gets are all built from it, so adding
an option is one field here.

Values are checked here once, whatever they come from (a flag, a ``FANOUT_*`` variable, a flow parameter):
a bad one is an ``OptionError`` naming where it came from and the rule it breaks.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from controller.durations import parse_duration
from controller.policy import RetryPolicy, parse_max_failures, parse_policy
from controller.quota import Rates
from controller.spec import BATCH_ID_RULE, is_batch_id

Command = Literal["run", "plan"]
# Numbers this long are a slip of the keyboard, not a count or a number of seconds; Python refuses to convert
# integer literals over 4,300 digits, and a float that long is as wrong.
_MAX_NUMBER_CHARS = 32
MAX_CONCURRENCY = 1000
MAX_RUNNING_TASKS = 1_000_000
MIN_POLL_SECONDS, MAX_POLL_SECONDS = 0.05, 600.0
MAX_DEADLINE_SECONDS = 30 * 86400
MAX_RATE_PER_MINUTE = 1_000_000
RATE_KINDS = tuple(Rates.__dataclass_fields__)


class OptionError(ValueError):
    """An option's value is invalid; the message names the flag or variable and the rule."""


@dataclass(frozen=True)
class Meta:
    """How an option is reached: its flag (None: flow only), variable, commands, and whether the flow takes it."""

    flag: str | None = None
    env: str | None = None
    commands: tuple[Command, ...] = ("run",)
    flow: bool = True
    metavar: str | None = None
    repeat: bool = False  # the flag may be given many times; its values form a list


def option(default: Any, text: str, **meta: Any) -> Any:
    """A field of ``RunOptions`` with its help text and how it is reached (see ``Meta``)."""
    return Field(default=default, description=text, json_schema_extra={"fanout": Meta(**meta).__dict__})


def meta_of(info: FieldInfo) -> Meta:
    extra = info.json_schema_extra
    assert isinstance(extra, dict)
    return Meta(**extra["fanout"])  # type: ignore[arg-type]


class RunOptions(BaseModel):
    """The options of one run of a batch. The field order is the order of ``--help`` and the Prefect form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str | None = option(
        None,
        "Google Cloud project of the jobs; default: the catalog's (Terraform's job_catalog output). With none, "
        "`fanout run` uses its local emulator",
        flag="--project",
        env="FANOUT_PROJECT",
        commands=("run", "plan"),
    )
    region: str | None = option(
        None, "region of the jobs; default: the catalog's, else us-central1", flag="--region", env="FANOUT_REGION"
    )
    catalog: str | None = option(
        None,
        "job catalog: a jobs/ folder or `terraform output -json job_catalog` saved to a file; default: the "
        "bundled example jobs",
        flag="--catalog",
        env="FANOUT_CATALOG",
        commands=("run", "plan"),
    )
    mode: Literal["auto", "packed", "per-item"] = option(
        "auto",
        "auto: pack items of packable jobs into shared executions; packed: insist; per-item: one execution per item",
        flag="--mode",
        env="FANOUT_MODE",
        commands=("run", "plan"),
    )
    batch_id: str | None = option(
        None,
        "batch id (overrides the spec's); reuse one to resume a batch",
        flag="--batch-id",
        env="FANOUT_BATCH_ID",
        commands=("run", "plan"),
    )
    report_to: str | None = option(
        None,
        "where report.json and report.html go: gs://BUCKET/PREFIX or a folder; default: the Terraform "
        "catalog's report bucket, else ./reports. Ignored when report_block is set",
        flag="--report-to",
        env="FANOUT_REPORT_TO",
        commands=("run", "plan"),  # a one-off job's name depends on it: the plan names the run's
    )
    report_block: str | None = option(
        None,
        "prefect-gcp GcsBucket block to write the report to (its bucket, folder and credentials) instead of report_to",
        flag="--report-block",
    )
    manifests_to: str | None = option(
        None,
        "where packed launches' manifests go (gs://BUCKET/PREFIX or a folder); default: the Terraform "
        "catalog's manifest prefix, else beside the report; the jobs' service account must be able to read there",
        flag="--manifests-to",
        env="FANOUT_MANIFESTS_TO",
    )
    concurrency: int = option(
        16,
        f"launch requests in flight at once, 1 to {MAX_CONCURRENCY:,}",
        flag="--concurrency",
        env="FANOUT_CONCURRENCY",
    )
    max_running_tasks: int | None = option(
        None,
        f"at most this many tasks of the batch running at any moment, 1 to {MAX_RUNNING_TASKS:,}: packed launches "
        "are split to fit and launches wait for running ones to end; default: no cap",
        flag="--max-running-tasks",
        env="FANOUT_MAX_RUNNING_TASKS",
        commands=("run", "plan"),
    )
    max_failures: str | None = option(
        None,
        "stop early once this many items failed for good: a count (10) or a share of the items (5%); nothing more "
        "is launched and what runs is cancelled (see --on-max-failures); overrides the spec's max_failures",
        flag="--max-failures",
        env="FANOUT_MAX_FAILURES",
    )
    on_max_failures: Literal["cancel", "finish"] | None = option(
        None,
        "when the batch stops early: cancel what runs, or let it finish; default: the spec's on_max_failures, "
        "else cancel",
        flag="--on-max-failures",
    )
    retry: dict[str, Any] | None = option(
        None,
        "the controller's own retries of failed items, replacing the spec's defaults.retry (an item's own retry "
        "still wins): attempts=N (in all), on=CODES (exit codes, infrastructure, timeout; default: any failure), "
        "never=CODES, backoff=10s, backoff_max=5m",
        flag="--retry",
        metavar="NAME=VALUE",
        repeat=True,
    )
    deadline: str | None = option(
        None, "cancel the batch after this long, e.g. 2h or 45m (at most 30 days)", flag="--deadline"
    )
    logs_for: Literal["failed", "all", "none"] = option(
        "failed", "which items get log tails in the report", flag="--logs"
    )
    gcp_credentials_block: str | None = option(
        None,
        "name of a saved prefect-gcp GcpCredentials block; default: Application Default Credentials",
        flag="--credentials-block",
    )
    poll_interval: float = option(
        2.0,
        f"the fastest poll, {MIN_POLL_SECONDS} to {MAX_POLL_SECONDS:.0f} seconds; polling slows to 30 s while "
        "nothing changes",
        flag="--poll-interval",
    )
    rates: dict[str, int | None] | None = option(
        None,
        "API calls per minute by kind: run, write, read, logs ('none' for unlimited); defaults follow Cloud "
        "Run's and Logging's default quotas (run=180 write=180 read=1000 logs=60)",
        flag="--rate",
        metavar="KIND=N",
        repeat=True,
    )
    local_quota: bool = option(
        False,
        "keep the API-call budget in this process; by default it is one Prefect global rate limit per "
        "project and kind of call, shared by every batch of the project",
        flag="--local-quota",
        env="FANOUT_LOCAL_QUOTA",
    )
    fail_on_item_failure: bool = option(
        True,
        "end the flow run Failed when any item did not succeed (after the report is written); false keeps it Completed",
    )
    emulator: str | None = option(
        None,
        "URL of a running `fanout emulator` to use instead of Google",
        flag="--emulator",
        env="FANOUT_EMULATOR_HOST",
        flow=False,
    )
    quiet: bool = option(False, "print only the summary and errors", flag="--quiet", flow=False)
    as_json: bool = option(
        False, "print the launches and their overrides as JSON", flag="--json", commands=("plan",), flow=False
    )

    @field_validator("concurrency", "max_running_tasks", "poll_interval", mode="before")
    @classmethod
    def _short_number(cls, value: Any) -> Any:
        if isinstance(value, str) and len(value.strip()) > _MAX_NUMBER_CHARS:
            raise ValueError(f"a number of at most {_MAX_NUMBER_CHARS} characters, got {len(value)}")
        return value

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, value: int) -> int:
        if not 1 <= value <= MAX_CONCURRENCY:
            raise ValueError(f"between 1 and {MAX_CONCURRENCY}, got {value}")
        return value

    @field_validator("max_running_tasks")
    @classmethod
    def _max_running_tasks(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= MAX_RUNNING_TASKS:
            raise ValueError(f"between 1 and {MAX_RUNNING_TASKS:,}, got {value}")
        return value

    @field_validator("poll_interval")
    @classmethod
    def _poll_interval(cls, value: float) -> float:
        if not (math.isfinite(value) and MIN_POLL_SECONDS <= value <= MAX_POLL_SECONDS):
            raise ValueError(f"seconds between {MIN_POLL_SECONDS} and {MAX_POLL_SECONDS:.0f}, got {value}")
        return value

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                seconds = parse_duration(value)
            except ValueError:
                raise ValueError(f"expected a duration such as '90s', '10m' or '1h30m', got {_short(value)}") from None
            if not (math.isfinite(seconds) and 1 <= seconds <= MAX_DEADLINE_SECONDS):
                raise ValueError(f"between 1s and 30 days, got {_short(value)}")
        return value

    @field_validator("max_failures", mode="before")
    @classmethod
    def _max_failures(cls, value: Any) -> Any:
        if value is None:
            return None
        parse_max_failures(value)
        return str(value)

    @field_validator("retry", mode="before")
    @classmethod
    def _retry(cls, value: Any) -> Any:
        if isinstance(value, list):
            value = parse_policy(value)
        if value is not None:
            try:
                RetryPolicy.model_validate(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"{where}: {str(first['msg']).removeprefix('Value error, ')}") from None
        return value

    @field_validator("batch_id")
    @classmethod
    def _batch_id(cls, value: str | None) -> str | None:
        if value is not None and not is_batch_id(value):
            raise ValueError(f"{BATCH_ID_RULE}, got {_short(value)}")
        return value

    @field_validator("rates", mode="before")
    @classmethod
    def _rates(cls, value: Any) -> Any:
        if isinstance(value, list):
            return parse_rates(value)
        return value

    @field_validator("rates")
    @classmethod
    def _known_rates(cls, value: dict[str, int | None] | None) -> dict[str, int | None] | None:
        for kind, rate in (value or {}).items():
            if kind not in RATE_KINDS:
                raise ValueError(f"unknown kind {_short(kind)}; use one of {', '.join(RATE_KINDS)}")
            if rate is not None and not 1 <= rate <= MAX_RATE_PER_MINUTE:
                raise ValueError(f"{kind}: give 1 to {MAX_RATE_PER_MINUTE:,} calls per minute, or none")
        return value

    @property
    def retry_policy(self) -> RetryPolicy | None:
        return None if self.retry is None else RetryPolicy.model_validate(self.retry)

    @property
    def deadline_seconds(self) -> float | None:
        return parse_duration(self.deadline) if self.deadline else None

    def budget(self) -> Rates:
        """The calls-per-minute budget: the defaults, with the kinds this run sets."""
        return Rates(**{**Rates().__dict__, **(self.rates or {}), "shared": not self.local_quota})

    # -- building from the outside -----------------------------------------------------------------------

    @classmethod
    def from_cli(cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> RunOptions:
        """The options of one command: its flags, else their ``FANOUT_*`` variables, else the defaults."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for name, info in cls.model_fields.items():
            meta = meta_of(info)
            given = getattr(args, name, None)
            if given is not None:
                values[name], origin[name] = given, meta.flag or name
            elif meta.env and environ.get(meta.env):
                values[name], origin[name] = environ[meta.env], meta.env
        return cls._checked(values, origin)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> RunOptions:
        """The options of a flow run, from its parameters."""
        return cls._checked(dict(parameters), {name: name for name in parameters})

    @classmethod
    def _checked(cls, values: dict[str, Any], origin: Mapping[str, str]) -> RunOptions:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise OptionError("\n".join(_describe(err, values, origin) for err in exc.errors())) from None


def _describe(err: Any, values: Mapping[str, Any], origin: Mapping[str, str]) -> str:
    name = str(err["loc"][0]) if err["loc"] else ""
    where = origin.get(name, name)
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown option"
    got = "" if "got " in message else f" (got {_short(values.get(name))})"
    return f"{where}: {message}{got}"


def _short(value: Any) -> str:
    """A value as an error message quotes it: whole if short, else its start (a pasted file is no value)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "...'"


def parse_rates(specs: list[str]) -> dict[str, int | None]:
    """``["run=60", "logs=none"]`` -> ``{"run": 60, "logs": None}``; other kinds keep their defaults."""
    rates: dict[str, int | None] = {}
    for spec in specs:
        kind, _, value = str(spec).partition("=")
        if value.lower() in {"none", "unlimited"}:
            rates[kind] = None
        elif value.isascii() and value.isdigit() and len(value) <= _MAX_NUMBER_CHARS:
            rates[kind] = int(value)
        else:
            raise ValueError(f"{_short(spec)}: give KIND=N with a whole number of calls per minute, or KIND=none")
    return rates


# -- the command line ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, command: Command) -> None:
    """Add the flags of ``command``'s options. Values stay text here; ``RunOptions.from_cli`` checks them,
    so a bad ``FANOUT_*`` variable never stops ``--help``."""
    for name, info in RunOptions.model_fields.items():
        meta = meta_of(info)
        if meta.flag is None or command not in meta.commands:
            continue
        if info.annotation is bool:
            parser.add_argument(meta.flag, dest=name, action="store_true", default=None, help=_help(info, meta))
        else:
            parser.add_argument(
                meta.flag,
                dest=name,
                action="append" if meta.repeat else "store",
                default=None,
                metavar=meta.metavar or meta.flag.removeprefix("--").replace("-", "_").upper(),
                help=_help(info, meta),
            )


def _help(info: FieldInfo, meta: Meta) -> str:
    parts = []
    choices = _choices(info)
    if choices:
        parts.append("one of " + ", ".join(choices))
    if meta.env:
        parts.append(f"env {meta.env}")
    if info.default not in (None, False):
        parts.append(f"default {info.default}")
    if meta.repeat:
        parts.append("repeatable")
    extra = f" ({'; '.join(parts)})" if parts else ""
    return f"{info.description}{extra}".replace("%", "%%")  # argparse formats help with %


def _choices(info: FieldInfo) -> tuple[str, ...]:
    args = getattr(info.annotation, "__args__", ())
    return tuple(str(a) for a in args) if getattr(info.annotation, "__origin__", None) is Literal else ()


# -- the flow -----------------------------------------------------------------------------------------------


def flow_fields() -> dict[str, FieldInfo]:
    """The options a flow run takes, in order."""
    return {name: info for name, info in RunOptions.model_fields.items() if meta_of(info).flow}


def flow_signature(first: list[inspect.Parameter], returns: Any) -> inspect.Signature:
    """``first`` (the batch) followed by one keyword-only parameter per flow option, with its default."""
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info.default, annotation=info.annotation)
        for name, info in flow_fields().items()
    ]
    return inspect.Signature([*first, *params], return_annotation=returns)


def flow_docstring(summary: str, first: Mapping[str, str]) -> str:
    """A Google-style docstring whose ``Args`` Prefect shows next to each parameter of a deployment."""
    args = {**first, **{name: f"{info.description}." for name, info in flow_fields().items()}}
    lines = [summary, "", "Args:"]
    for name, text in args.items():
        wrapped = textwrap.wrap(f"{name}: {text}", width=100, subsequent_indent="        ")
        lines += [f"    {line}" for line in wrapped]
    return "\n".join(lines) + "\n"


__all__ = [
    "OptionError",
    "RunOptions",
    "add_arguments",
    "flow_docstring",
    "flow_fields",
    "flow_signature",
    "parse_rates",
]
