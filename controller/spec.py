"""Batch specs: what the user asks to run, loaded from YAML, JSON or Python objects and validated.

Validation happens before any API call and reports every problem at once, each with its location
(``items[12].env.PORT``, plus the file line when the spec came from a file). Nothing here talks to GCP.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from controller import limits, spec_yaml
from controller.catalog import Catalog, JobDefinition
from controller.durations import parse_duration
from controller.files import NotReadable, read_regular_file
from controller.gc_pause import gc_paused
from controller.policy import RetryPolicy, StopAction, StopRule, parse_max_failures
from controller.redact import MIN_SECRET_CHARS, Redactor
from controller.spec_lines import LazyLines, line_of

MAX_SPEC_BYTES = 256 * 1024 * 1024  # a million-item spec: about 55 MB of YAML, 100 MB of JSON
MAX_ITEMS = 1_000_000  # a packed batch of a million items is 100 executions of 10,000 tasks (issue 37)
# Cloud Run refuses requests over its API size limits; one item's args and env must fit comfortably.
MAX_ARGS_BYTES = 64 * 1024
MAX_ENV_VALUE_BYTES = 32 * 1024
# Both are matched whole (fullmatch: "$" would accept a trailing newline). A key names files under the
# report's folder, so no segment of it may be "." or "..".
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,127}")
_BATCH_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
BATCH_ID_RULE = "batch_id has 1-40 lowercase letters, digits or hyphens and starts with a letter or digit"
KEY_RULE = (
    "a key has 1-128 letters, digits or ._:/@+=-, starts with a letter or digit and has no '.' or '..' "
    "segment between slashes"
)


class SpecError(Exception):
    """The spec is invalid. ``problems`` lists every problem found, each with its location."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(f"invalid batch spec{where} ({count}):\n" + "\n".join(f"  - {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class SecretValue(_Strict):
    """An env value that must never appear in a report, log or error: either a Secret Manager reference
    (Cloud Run reads it; the value never passes through the controller) or a literal marked sensitive."""

    secret: str | None = Field(default=None, description="Secret Manager secret: projects/P/secrets/S")
    version: str = "latest"
    value: str | None = Field(default=None, description="a literal value, redacted everywhere")

    @field_validator("value")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < MIN_SECRET_CHARS:
            raise ValueError(
                f"a literal secret needs at least {MIN_SECRET_CHARS} characters to be redacted safely (this one "
                f"has {len(value)}); pass a short one as a plain value or keep it in Secret Manager"
            )
        return value

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, secret: str | None) -> str | None:
        if secret is not None and not re.fullmatch(r"(projects/[^/]+/secrets/)?[A-Za-z0-9_-]{1,255}", secret):
            raise ValueError("secret must be a Secret Manager name: 'projects/PROJECT/secrets/NAME' or 'NAME'")
        return secret

    def model_post_init(self, _context: Any) -> None:
        if (self.secret is None) == (self.value is None):
            raise ValueError("give exactly one of 'secret' (a Secret Manager reference) or 'value'")


EnvValue = str | SecretValue


class ItemFields(_Strict):
    """Fields an item and the ``defaults`` block share."""

    job: str | None = None
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, EnvValue] | None = None
    task_count: int | None = Field(default=None, ge=1, le=limits.MAX_TASKS_PER_EXECUTION)
    timeout: str | float | None = None
    retries: int | None = Field(default=None, ge=0, le=limits.MAX_RETRIES)
    cpu: str | None = None
    memory: str | None = None
    retry: RetryPolicy | None = Field(default=None, description="the controller's own retries (controller.policy)")

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, timeout: str | float | None) -> str | float | None:
        if timeout is not None:
            seconds = parse_duration(timeout)
            if not 1 <= seconds <= limits.MAX_TASK_TIMEOUT_SECONDS:
                raise ValueError(
                    f"timeout must be between 1s and {limits.MAX_TASK_TIMEOUT_SECONDS // 3600}h "
                    f"(Cloud Run's limit), got {timeout!r}"
                )
        return timeout

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and (problem := limits.image_problem(image)):
            raise ValueError(problem)
        return image

    @field_validator("task_count", "retries", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML's true would count as 1
            raise ValueError(f"a whole number is needed, not {str(value).lower()}")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, cpu: str | None) -> str | None:
        if cpu is not None and (problem := limits.cpu_problem(cpu)):
            raise ValueError(problem)
        return cpu

    @field_validator("memory")
    @classmethod
    def _memory(cls, memory: str | None) -> str | None:
        if memory is not None and (problem := limits.memory_problem(memory)):
            raise ValueError(problem)
        return memory

    @field_validator("args", "command")
    @classmethod
    def _argv_size(cls, argv: list[str] | None) -> list[str] | None:
        if argv is not None and sum(len(a.encode()) + 1 for a in argv) > MAX_ARGS_BYTES:
            raise ValueError(f"arguments are over {MAX_ARGS_BYTES // 1024} KiB; pass large inputs by URL")
        return argv


class ItemSpec(ItemFields):
    key: str | None = None
    label: str | None = Field(default=None, max_length=200)


class BatchSpec(_Strict):
    """A batch as written by the user, before defaults are applied."""

    batch_id: str | None = None
    defaults: ItemFields = ItemFields()
    keep_jobs: bool = Field(default=False, description="keep one-off jobs after the batch")
    max_failures: int | float | str | None = Field(
        default=None, description="stop early once this many items failed: a count, or a share such as '5%'"
    )
    on_max_failures: StopAction = Field(default="cancel", description="then cancel what runs, or let it finish")
    # Items are validated one by one (see validate) so one bad item does not hide the others' problems.
    items: list[Any] = Field(min_length=1, max_length=MAX_ITEMS)

    @field_validator("batch_id")
    @classmethod
    def _batch_id(cls, batch_id: str | None) -> str | None:
        if batch_id is not None and not is_batch_id(batch_id):
            raise ValueError(BATCH_ID_RULE)
        return batch_id

    @field_validator("max_failures")
    @classmethod
    def _max_failures(cls, value: int | float | str | None) -> int | float | None:
        return None if value is None else parse_max_failures(value)


def is_batch_id(text: str) -> bool:
    """Whether ``text`` may name a batch: it becomes a folder name under the report location."""
    return _BATCH_ID_RE.fullmatch(text) is not None


def is_item_key(text: str) -> bool:
    """Whether ``text`` may be an item's key: safe in object names, with no relative path segment."""
    if _KEY_RE.fullmatch(text) is None:
        return False
    return "." not in text or not {".", ".."} & set(text.split("/"))


@dataclass(frozen=True, slots=True)
class Item:
    """One item with defaults applied and every value checked: what the planner works from."""

    index: int
    key: str
    job: str | None  # a catalog job, or None for a one-off container run
    image: str | None
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None  # None: the job's default args
    env: tuple[tuple[str, str], ...]
    secret_env: tuple[tuple[str, str, str], ...]  # (name, secret, version)
    sensitive_env: tuple[tuple[str, str], ...]  # literal values to pass but never show
    task_count: int | None
    timeout_seconds: float | None
    retries: int | None
    cpu: str | None
    memory: str | None
    label: str | None
    retry: RetryPolicy | None = None  # the item's own; else the batch's (``Batch.retry``)


@dataclass(frozen=True, slots=True)
class Batch:
    """A validated batch."""

    batch_id: str
    items: tuple[Item, ...]
    keep_jobs: bool
    digest: str  # sha256 of the canonical JSON of the spec as given
    retry: RetryPolicy | None = None  # ``defaults.retry``: the policy of items that give none of their own
    stop: StopRule | None = None  # ``max_failures``

    def retry_of(self, item: Item) -> RetryPolicy | None:
        """The retry policy an item runs under."""
        return item.retry or self.retry

    def sensitive_values(self) -> frozenset[str]:
        """Literal values that must be redacted from every output."""
        return frozenset(value for item in self.items for _, value in item.sensitive_env if value)


def new_batch_id() -> str:
    """A fresh, sortable-enough batch id: ``b-<8 hex>``."""
    return f"b-{secrets.token_hex(4)}"


# --- loading -------------------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise _DuplicateKey(key)
        mapping[key] = value
    return mapping


def _decoded(text: str | bytes, source: str) -> str:
    if isinstance(text, bytes):
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError([f"spec is {len(text)} bytes; the limit is {MAX_SPEC_BYTES}"], source)
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecError(
                [f"byte {exc.start}: not UTF-8 text; save the spec as UTF-8 (YAML or JSON)"], source
            ) from None
    if "\x00" in text:
        raise SpecError(["the spec contains NUL characters; is it a binary file?"], source)
    return text


def _yaml(text: str, source: str) -> Any:
    try:
        return spec_yaml.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError([f"{where}{exc.problem or exc.context}"], source) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise SpecError([f"cannot parse as YAML or JSON: {str(exc).splitlines()[0]}"], source) from None
    except ValueError:  # int() refuses literals over sys.get_int_max_str_digits() digits
        raise SpecError(
            [f"a number in the spec has over {sys.get_int_max_str_digits():,} digits; no field takes one that long"],
            source,
        ) from None


def parse_text(text: str | bytes, source: str = "<spec>") -> tuple[Any, str]:
    """Decode and parse YAML or JSON text into plain data; returns the data and the decoded text."""
    text = _decoded(text, source)
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text, object_pairs_hook=_unique_pairs), text
        except _DuplicateKey as exc:
            raise SpecError([f"duplicate key {exc.args[0]!r}"], source) from None
        except ValueError:
            pass  # flow-style YAML also starts with a brace; let the YAML parser say what is wrong
        except RecursionError:
            raise SpecError(["the spec is nested too deeply"], source) from None
    return _yaml(text, source), text


def load_spec_file(path: str | Path) -> tuple[Any, str, str]:
    """Read a spec file: returns the parsed data, its text and a display name.

    Only a regular file, and the read is bounded: a FIFO, /dev/zero or a file over the limit is refused.
    """
    path = Path(path)
    try:
        raw = read_regular_file(path, MAX_SPEC_BYTES)
    except OSError as exc:
        raise SpecError([f"cannot read the spec: {exc.strerror or exc}"], str(path)) from None
    except NotReadable as exc:
        raise SpecError([f"cannot read the spec: {exc}; give a YAML or JSON file"], str(path)) from None
    data, text = parse_text(raw, str(path))
    return data, text, str(path)


# --- validation ----------------------------------------------------------------------------------------


def _loc(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(loc: tuple[str | int, ...], msg: str, lines: Mapping[tuple[str | int, ...], int]) -> str:
    line = line_of(lines, loc)
    prefix = f"line {line}: " if line else ""
    return f"{prefix}{_loc(loc)}: {msg}"


def _pydantic_problems(
    exc: ValidationError, lines: Mapping[tuple[str | int, ...], int], prefix: tuple[str | int, ...] = ()
) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        if "str" in err["loc"] and isinstance(err["input"], dict):
            continue  # a mapping under ``str | SecretValue`` is meant as a SecretValue: its own errors say why
        # Union members add their type names to the location (e.g. "str", "SecretValue"); drop them.
        loc = prefix + tuple(p for p in err["loc"] if p not in {"str", "SecretValue", "float", "int"})
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `fanout run --help` for the spec format)"
        elif err["type"] in {"model_type", "model_attributes_type", "dict_type"}:
            msg = f"expected a mapping of fields, got {type(err['input']).__name__}"
        problems.append(_describe(loc, msg, lines))
    return list(dict.fromkeys(problems))


def canonical_digest(data: Any) -> str:
    """sha256 of the spec's canonical JSON: the same spec always has the same digest."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate(
    data: Any,
    catalog: Catalog,
    *,
    text: str | None = None,
    source: str | None = None,
    batch_id: str | None = None,
) -> Batch:
    """Check a parsed spec against the schema, Cloud Run's limits and the job catalog.

    ``text`` is the spec's source text, used only to give line numbers when something is wrong.
    Raises SpecError listing every problem found.
    """
    lines = LazyLines(text)
    if isinstance(data, list):
        data = {"items": data}
    if not isinstance(data, dict):
        raise SpecError(["the spec must be a mapping with an 'items' list (or a list of items)"], source)
    try:
        spec = BatchSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_pydantic_problems(exc, lines), source) from None
    except RecursionError:
        raise SpecError(["the spec is nested too deeply"], source) from None
    items, problems = _items(spec, catalog, lines)
    if problems:
        raise SpecError(problems, source)
    return Batch(
        batch_id=batch_id or spec.batch_id or new_batch_id(),
        items=tuple(items),
        keep_jobs=spec.keep_jobs,
        digest=canonical_digest(data),
        retry=spec.defaults.retry,
        stop=_stop_rule(spec),
    )


def _stop_rule(spec: BatchSpec) -> StopRule | None:
    if spec.max_failures is None:
        return None
    return StopRule(parse_max_failures(spec.max_failures), spec.on_max_failures)


_Loc = tuple[str | int, ...]
_Problems = list[tuple[_Loc, str]]
_ITEM_LIST: TypeAdapter[list[ItemSpec]] = TypeAdapter(list[ItemSpec])


# Items are read against the schema a slice at a time: read all at once, 100,000 items held 90 MB of
# pydantic models only to drop them once resolved.
_ITEMS_PER_READ = 1000


def _item_specs(raw_items: list[Any], lines: Mapping[_Loc, int]) -> Iterator[tuple[int, ItemSpec | None, list[str]]]:
    """Each item read against the schema: its index, its spec (None where it fails) and its problems.

    One pydantic call reads a slice; only when it fails is each of its items read alone, so an invalid
    item's problems read as they always did and one bad item does not hide the others' problems.
    """
    for start in range(0, len(raw_items), _ITEMS_PER_READ):
        chunk = raw_items[start : start + _ITEMS_PER_READ]
        try:
            specs = _ITEM_LIST.validate_python(chunk)
        except ValidationError:
            for index, raw in enumerate(chunk, start):
                try:
                    yield index, ItemSpec.model_validate(raw), []
                except ValidationError as exc:
                    yield index, None, _pydantic_problems(exc, lines, prefix=("items", index))
        else:
            yield from ((index, spec, []) for index, spec in enumerate(specs, start))


def _items(spec: BatchSpec, catalog: Catalog, lines: Mapping[_Loc, int]) -> tuple[list[Item], list[str]]:
    """The batch's items with defaults applied, and every problem found, in item order."""
    resolve = _Resolver(spec.defaults, catalog)
    problems: list[str] = []
    items: list[Item] = []
    seen: dict[str, int] = {}
    for index, raw, invalid in _item_specs(spec.items, lines):
        if raw is None:
            problems.extend(invalid)
            continue
        item, item_problems = resolve(index, raw)
        if item is None:
            problems.extend(_describe(loc, msg, lines) for loc, msg in item_problems)
            continue
        if (first := seen.setdefault(item.key, index)) != index:
            problems.append(
                _describe(("items", index, "key"), f"duplicate key {item.key!r} (also items[{first}])", lines)
            )
        items.append(item)
    items, secret_problems = _guard_secrets(items)
    problems.extend(_describe(loc, msg, lines) for loc, msg in secret_problems)
    return items, problems


def _guard_secrets(items: list[Item]) -> tuple[list[Item], _Problems]:
    """Labels with any item's literal secret masked; a key that holds one is refused (it names files)."""
    secrets_ = {value for item in items for _, value in item.sensitive_env}
    if not secrets_:
        return items, []
    redact = Redactor(secrets_)
    problems: _Problems = [
        (("items", item.index, "key"), "the key contains a secret literal; keys are shown and stored in clear")
        for item in items
        if redact(item.key) != item.key
    ]
    return [replace(item, label=redact(item.label)) if item.label else item for item in items], problems


# A model's field values, read from its __dict__: attribute access on a pydantic model costs about a
# microsecond, and resolving one item reads some 25 fields.
_Fields = Mapping[str, Any]


class _Target(NamedTuple):
    """What an item runs: a catalog job (with its definition when the catalog has it) or a one-off image."""

    job: str | None
    image: str | None
    definition: JobDefinition | None


def _target(
    own: _Fields, defaults: _Fields, command: list[str] | None, catalog: Catalog, here: _Loc
) -> tuple[_Target, _Problems]:
    problems: _Problems = []
    # An item's own job/image choice wins over the defaults as a pair: an item that names an image is a
    # one-off run even when the defaults name a job.
    chosen = own if own["job"] is not None or own["image"] is not None else defaults
    job, image = chosen["job"], chosen["image"]
    if job is not None and image is not None:
        problems.append((here, "give either 'job' (a provisioned Cloud Run job) or 'image' (a one-off run), not both"))
    elif job is None and image is None:
        problems.append((here, "give 'job' (a provisioned Cloud Run job) or 'image' and 'command' (a one-off run)"))
    definition = None
    if job is not None:
        definition = catalog.jobs.get(job)
        if definition is None:
            known = ", ".join(sorted(catalog.jobs)) or "none"
            problems.append(((*here, "job"), f"no job {job!r} in the catalog (known jobs: {known})"))
        if own["command"] is not None or own["cpu"] is not None or own["memory"] is not None:
            problems.extend(
                ((*here, name), f"'{name}' applies to one-off runs ('image'); a provisioned job's is fixed")
                for name in ("command", "cpu", "memory")
                if own[name] is not None
            )
    elif image is not None and not command:
        problems.append(
            ((*here, "command"), "a one-off run needs a non-empty 'command' (the program and its arguments)")
        )
    return _Target(job, image, definition), problems


def _resources_problems(fields: _Fields, here: _Loc) -> _Problems:
    """A one-off run's cpu and memory as a pair (each alone is checked by the schema)."""
    if fields["cpu"] is None and fields["memory"] is None:
        return []
    problem = limits.resources_problem(fields["cpu"] or "1", fields["memory"] or "512Mi")
    return [((*here, "memory" if fields["memory"] is not None else "cpu"), problem)] if problem else []


def _job_problems(own: _Fields, args: list[str] | None, target: _Target, here: _Loc) -> _Problems:
    """What a provisioned job's definition forbids: missing args, a retries value it cannot take."""
    definition, job = target.definition, target.job
    if definition is None:
        return []
    problems: _Problems = []
    if definition.requires_args and not (args if args is not None else definition.args):
        problems.append(((*here, "args"), f"job {job!r} needs args (its definition says requires_args)"))
    if own["retries"] is not None and own["retries"] != definition.max_retries:
        problems.append(
            (
                (*here, "retries"),
                f"Cloud Run cannot override retries per execution; job {job!r} has max_retries="
                f"{definition.max_retries} (change it in jobs/{job}/job.yaml)",
            )
        )
    return problems


@dataclass
class _Env:
    plain: list[tuple[str, str]] = field(default_factory=list)
    secret: list[tuple[str, str, str]] = field(default_factory=list)
    sensitive: list[tuple[str, str]] = field(default_factory=list)


_NO_ENV = _Env()


def _env(env: Mapping[str, EnvValue], here: _Loc) -> tuple[_Env, _Problems]:
    """An item's env split into plain values, Secret Manager references and literal secrets, checked."""
    problems: _Problems = []
    out = _Env()
    if len(env) > limits.MAX_ENV_VARS_PER_CONTAINER:
        problems.append(((*here, "env"), f"at most {limits.MAX_ENV_VARS_PER_CONTAINER} env vars per container"))
    for name, value in env.items():
        if problem := limits.env_name_problem(name):
            problems.append(((*here, "env", name), problem))
        elif name.startswith("FANOUT_"):
            problems.append(((*here, "env", name), "names starting with FANOUT_ are reserved for the controller"))
        if isinstance(value, SecretValue):
            if value.secret is not None:
                out.secret.append((name, value.secret, value.version))
            else:
                out.sensitive.append((name, value.value or ""))
        else:
            if len(value.encode()) > MAX_ENV_VALUE_BYTES:
                problems.append(((*here, "env", name), f"value is over {MAX_ENV_VALUE_BYTES // 1024} KiB"))
            out.plain.append((name, value))
    return out, problems


class _Resolver:
    """Applies a batch's defaults to its items and checks what the schema cannot.

    This runs once per item (100,000 times for the largest batch), so it reads each field once and builds
    nothing it does not return.
    """

    def __init__(self, defaults: ItemFields, catalog: Catalog) -> None:
        self._defaults: _Fields = defaults.__dict__
        # The defaults that fill an item's unset fields (job, image and env merge apart). Usually there are
        # none, and an item's fields are then its own as they are.
        self._fill = {
            name: value
            for name, value in self._defaults.items()
            # An item's retry stays its own: a batch's policy is Batch.retry, which --retry can replace.
            if value is not None and name not in {"job", "image", "env", "retry"}
        }
        self._catalog = catalog

    def __call__(self, index: int, raw: ItemSpec) -> tuple[Item | None, _Problems]:
        """The item with its defaults applied, or the problems that stop it."""
        here: _Loc = ("items", index)
        own: _Fields = raw.__dict__
        fields = (
            {**own, **{name: value for name, value in self._fill.items() if own[name] is None}} if self._fill else own
        )
        key = own["key"] if own["key"] is not None else f"item-{index:05d}"
        problems: _Problems = [] if is_item_key(key) else [((*here, "key"), KEY_RULE)]
        target, target_problems = _target(own, self._defaults, fields["command"], self._catalog, here)
        base_env = self._defaults["env"]
        env, env_problems = (
            _env({**(base_env or {}), **(own["env"] or {})}, here) if own["env"] or base_env else (_NO_ENV, [])
        )
        problems += target_problems + _job_problems(own, fields["args"], target, here) + env_problems
        if target.image is not None:
            problems += _resources_problems(fields, here)
        if problems:
            return None, problems
        command, args, timeout = fields["command"], fields["args"], fields["timeout"]
        # Item's fields in order: passed by keyword they cost a third more, 100,000 times.
        item = Item(
            index,
            key,
            target.job,
            target.image,
            tuple(command) if command is not None else None,
            tuple(args) if args is not None else None,
            tuple(env.plain),
            tuple(env.secret),
            tuple(env.sensitive),
            fields["task_count"],
            parse_duration(timeout) if timeout is not None else None,
            fields["retries"],
            fields["cpu"],
            fields["memory"],
            own["label"],
            own["retry"],
        )
        return item, []


def load_batch(
    source: str | Path | Mapping[str, Any] | list[Any],
    catalog: Catalog,
    *,
    batch_id: str | None = None,
) -> Batch:
    """Load and validate a batch from a file path, YAML/JSON text (anything multi-line or starting with
    a brace) or Python objects."""
    with gc_paused():
        if isinstance(source, Mapping | list):
            return validate(dict(source) if isinstance(source, Mapping) else source, catalog, batch_id=batch_id)
        text = str(source)
        if isinstance(source, Path) or not ("\n" in text or text.lstrip().startswith(("{", "["))):
            data, text, name = load_spec_file(source)
        else:
            data, text = parse_text(text)
            name = "<inline spec>"
        return validate(data, catalog, text=text, source=name, batch_id=batch_id)
