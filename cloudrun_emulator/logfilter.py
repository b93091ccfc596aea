"""The subset of the Cloud Logging query language that clients use to read job logs.

Supported: ``AND`` / ``OR`` / ``NOT`` (and ``-`` as NOT), implicit AND between terms, parentheses, field paths
with quoted segments (``labels."run.googleapis.com/task_index"``), the operators ``= != > < >= <= : =~ !~``,
value lists (``field=("a" OR "b")``), ``field:*`` (field present), bare search terms (match in the payload),
``log_id("...")``, severities compared by level and timestamps compared as instants.

A filter is parsed once into a predicate; ``execution_names`` extracts an execution-name restriction so the
store can read only those executions' entries instead of scanning everything.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import quote

import regex

from cloudrun_emulator.errors import invalid
from cloudrun_emulator.timefmt import parse_rfc3339_micros

SEVERITY_LEVELS = {
    "DEFAULT": 0,
    "DEBUG": 100,
    "INFO": 200,
    "NOTICE": 300,
    "WARNING": 400,
    "ERROR": 500,
    "CRITICAL": 600,
    "ALERT": 700,
    "EMERGENCY": 800,
}
EXECUTION_LABEL = "run.googleapis.com/execution_name"
_OPERATORS = ("=~", "!~", ">=", "<=", "!=", "=", ">", "<", ":")
_PATH_STOP = set(' \t\r\n().=!<>:"')
_MISSING = object()


# Cloud Logging's own limit on a filter's length ("Logging query language": 20,000 characters).
MAX_FILTER_CHARS = 20_000
_deadline: ContextVar[float | None] = ContextVar("filter_deadline", default=None)


class FilterError(ValueError):
    """The filter is not valid; the message points at the problem."""


class FilterTimeout(Exception):
    """Evaluating a filter ran past the time budget of its request."""


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Bound the filter work done in this context: past ``seconds``, matching raises FilterTimeout."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def check_budget() -> None:
    """Raise FilterTimeout once the current time budget is spent."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise FilterTimeout


@dataclass(frozen=True)
class Record:
    """One stored log entry: its API JSON plus what filters compare (timestamps in epoch microseconds)."""

    seq: int
    ts: int
    receive_ts: int
    execution: str
    entry: dict[str, Any]


Predicate = Callable[[Record], bool]


@dataclass(frozen=True)
class _Cmp:
    path: tuple[str, ...]
    op: str
    values: tuple[str, ...]
    all_of: bool


@dataclass(frozen=True)
class _Bool:
    op: str  # "AND" or "OR"
    terms: tuple[Node, ...]


@dataclass(frozen=True)
class _Not:
    term: Node


@dataclass(frozen=True)
class _Search:
    text: str


@dataclass(frozen=True)
class _LogId:
    log_id: str


Node: TypeAlias = _Cmp | _Bool | _Not | _Search | _LogId


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> FilterError:
        return FilterError(f"invalid filter at position {self.pos}: {what}: {self.text[:200]!r}")

    def ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def keyword(self, word: str) -> bool:
        self.ws()
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and (end == len(self.text) or self.text[end] in " \t\r\n("):
            self.pos = end
            return True
        return False

    def parse(self) -> Node | None:
        self.ws()
        if self.pos == len(self.text):
            return None
        node = self.parse_or()
        self.ws()
        if self.pos != len(self.text):
            raise self.fail("unexpected text")
        return node

    def parse_or(self) -> Node:
        terms = [self.parse_and()]
        while self.keyword("OR"):
            terms.append(self.parse_and())
        return terms[0] if len(terms) == 1 else _Bool("OR", tuple(terms))

    def parse_and(self) -> Node:
        terms = [self.parse_unary()]
        while True:
            self.ws()
            if self.pos == len(self.text) or self.text[self.pos] == ")":
                break
            save = self.pos
            if self.keyword("OR"):
                self.pos = save
                break
            self.keyword("AND")
            terms.append(self.parse_unary())
        return terms[0] if len(terms) == 1 else _Bool("AND", tuple(terms))

    def parse_unary(self) -> Node:
        if self.keyword("NOT"):
            return _Not(self.parse_unary())
        self.ws()
        at = self.pos
        if self.text.startswith("-", at) and at + 1 < len(self.text) and not self.text[at + 1].isspace():
            self.pos += 1
            return _Not(self.parse_unary())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        self.ws()
        if self.pos >= len(self.text):
            raise self.fail("expected a term")
        if self.text[self.pos] == "(":
            self.pos += 1
            node = self.parse_or()
            self.ws()
            if not self.text.startswith(")", self.pos):
                raise self.fail("missing ')'")
            self.pos += 1
            return node
        if self.text.startswith("log_id(", self.pos):
            self.pos += len("log_id(")
            self.ws()
            log_id = self.string()
            self.ws()
            if not self.text.startswith(")", self.pos):
                raise self.fail("missing ')' after log_id")
            self.pos += 1
            return _LogId(log_id)
        if self.text[self.pos] == '"':
            return _Search(self.string())
        path = self.path()
        self.ws()
        op = next((o for o in _OPERATORS if self.text.startswith(o, self.pos)), None)
        if op is None:
            return _Search(".".join(path))
        self.pos += len(op)
        values, all_of = self.values()
        return _Cmp(path, op, values, all_of)

    def path(self) -> tuple[str, ...]:
        segments: list[str] = []
        self.ws()
        while True:
            if self.text.startswith('"', self.pos):
                segments.append(self.string())
            else:
                start = self.pos
                while self.pos < len(self.text) and self.text[self.pos] not in _PATH_STOP:
                    self.pos += 1
                if start == self.pos:
                    raise self.fail("expected a field name")
                segments.append(self.text[start : self.pos])
            if self.text.startswith(".", self.pos):
                self.pos += 1
                continue
            return tuple(segments)

    def string(self) -> str:
        if not self.text.startswith('"', self.pos):
            raise self.fail("expected a quoted string")
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if char == '"':
                return "".join(out)
            out.append(char)
        raise self.fail("unterminated string")

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace() and self.text[self.pos] != ")":
            self.pos += 1
        if start == self.pos:
            raise self.fail("expected a value")
        return self.text[start : self.pos]

    def value(self) -> str:
        self.ws()
        return self.string() if self.text.startswith('"', self.pos) else self.word()

    def values(self) -> tuple[tuple[str, ...], bool]:
        self.ws()
        if not self.text.startswith("(", self.pos):
            return (self.value(),), False
        self.pos += 1
        values: list[str] = []
        joiner: str | None = None
        while True:
            self.ws()
            if self.text.startswith(")", self.pos):
                self.pos += 1
                break
            if values:
                for word in ("OR", "AND"):
                    if self.keyword(word):
                        if joiner not in (None, word):
                            raise self.fail("a value list mixes AND and OR")
                        joiner = word
                        break
                else:
                    joiner = joiner or "AND"
            values.append(self.value())
        if not values:
            raise self.fail("empty value list")
        return tuple(values), joiner == "AND"


def _timestamp(text: str) -> int:
    try:
        return parse_rfc3339_micros(text)
    except ValueError:
        raise FilterError(f"invalid timestamp {text!r}: expected RFC 3339") from None


def _severity(text: str) -> int:
    if text.upper() in SEVERITY_LEVELS:
        return SEVERITY_LEVELS[text.upper()]
    if text.isdigit():
        return int(text)
    raise FilterError(f"invalid severity {text!r}")


def _getter(path: tuple[str, ...]) -> Callable[[Record], Any]:
    if path == ("timestamp",):
        return lambda record: record.ts
    if path == ("receiveTimestamp",):
        return lambda record: record.receive_ts
    if path == ("severity",):
        return lambda record: SEVERITY_LEVELS.get(record.entry.get("severity", "DEFAULT"), 0)

    def get(record: Record) -> Any:
        value: Any = record.entry
        for segment in path:
            if not isinstance(value, dict):
                return _MISSING
            value = value.get(segment, _MISSING)
        return value

    return get


def _regex_test(op: str, raw: str) -> Callable[[Any], bool]:
    """``=~`` / ``!~``. The match runs with the GIL released and stops at the request's time budget, so a
    pattern that backtracks catastrophically costs one request its answer, not the emulator its event loop."""
    try:
        pattern = regex.compile(raw)
    except regex.error as exc:
        raise FilterError(f"invalid regular expression {raw!r}: {exc}") from None
    found = op == "=~"

    def test(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        deadline = _deadline.get()
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        try:
            return (pattern.search(v, concurrent=True, timeout=timeout) is not None) == found
        except TimeoutError:
            raise FilterTimeout from None

    return test


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def _target(raw: str, kind: str) -> Any:
    """The value a comparison compares with: an instant, a severity level or the text itself."""
    if kind == "time":
        return _timestamp(raw)
    if kind == "severity":
        return _severity(raw)
    return raw


def _has_test(raw: str, kind: str, target: Any) -> Callable[[Any], bool]:
    """``:``: present (``:*``), equal for times and severities, else a case-insensitive substring."""
    if raw == "*":
        return lambda v: v is not _MISSING
    if kind != "text":
        return lambda v: v == target
    needle = raw.lower()
    return lambda v: needle in _text(v).lower()


def _coercion(raw: str, kind: str, target: Any) -> Callable[[Any], tuple[Any, Any]]:
    """How a field's value and the filter's value are made comparable: numbers as numbers, else text."""
    if kind != "text":
        return lambda v: (v, target)
    number = _number(raw)

    def coerce(v: Any) -> tuple[Any, Any]:
        if number is not None and isinstance(v, int | float) and not isinstance(v, bool):
            return v, number
        return _text(v), raw

    return coerce


def _scalar_test(op: str, raw: str, kind: str) -> Callable[[Any], bool]:
    if op in ("=~", "!~"):
        return _regex_test(op, raw)
    target = _target(raw, kind)
    if op == ":":
        return _has_test(raw, kind, target)
    coerce = _coercion(raw, kind, target)
    test = _COMPARE[op]

    def check(v: Any) -> bool:
        if v is _MISSING:
            return op == "!="
        left, right = coerce(v)
        return test(left, right)

    return check


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _compile(node: Node) -> Predicate:
    if isinstance(node, _Bool):
        preds = [_compile(term) for term in node.terms]
        if node.op == "AND":
            return lambda record: all(p(record) for p in preds)
        return lambda record: any(p(record) for p in preds)
    if isinstance(node, _Not):
        inner = _compile(node.term)
        return lambda record: not inner(record)
    if isinstance(node, _Search):
        needle = node.text.lower()
        return lambda record: needle in _payload_text(record.entry).lower()
    if isinstance(node, _LogId):
        suffix = "/logs/" + quote(node.log_id, safe="")
        return lambda record: str(record.entry.get("logName", "")).endswith(suffix)
    assert isinstance(node, _Cmp)
    get = _getter(node.path)
    kind = {"timestamp": "time", "receiveTimestamp": "time", "severity": "severity"}.get(".".join(node.path), "text")
    if node.op == "=" and kind == "text" and not node.all_of and len(node.values) > 1:
        # One set lookup instead of N comparisons: clients pass hundreds of execution names this way.
        choices = frozenset(node.values)
        return lambda record: _text(get(record)) in choices
    tests = [_scalar_test(node.op, raw, kind) for raw in node.values]
    if node.op == "!=" and len(tests) > 1:
        # field!=("a" OR "b") reads as "not equal to any of them".
        return lambda record: all(t(get(record)) for t in tests)
    if len(tests) == 1:
        only = tests[0]
        return lambda record: only(get(record))
    if node.all_of:
        return lambda record: all(t(get(record)) for t in tests)
    return lambda record: any(t(get(record)) for t in tests)


def _payload_text(entry: dict[str, Any]) -> str:
    if "textPayload" in entry:
        return str(entry["textPayload"])
    return str(entry.get("jsonPayload", ""))


@dataclass(frozen=True)
class CompiledFilter:
    """A parsed filter: the predicate and, when the filter pins them, the execution names it can match."""

    predicate: Predicate
    execution_names: frozenset[str] | None


def _execution_restriction(node: Node) -> frozenset[str] | None:
    if isinstance(node, _Cmp):
        is_label = node.path == ("labels", EXECUTION_LABEL)
        if is_label and node.op == "=" and (len(node.values) == 1 or not node.all_of):
            return frozenset(node.values)
        return None
    if isinstance(node, _Bool) and node.op == "AND":
        found: frozenset[str] | None = None
        for term in node.terms:
            names = _execution_restriction(term)
            if names is not None:
                found = names if found is None else found & names
        return found
    if isinstance(node, _Bool) and node.op == "OR":
        parts = [_execution_restriction(term) for term in node.terms]
        if all(part is not None for part in parts):
            return frozenset().union(*(p for p in parts if p is not None))
    return None


def compile_filter(text: str) -> CompiledFilter:
    """Parse a Logging filter; raises the API's 400 error for a filter it cannot read."""
    if len(text) > MAX_FILTER_CHARS:
        raise invalid("filter", f"the filter is longer than {MAX_FILTER_CHARS} characters")
    try:
        node = _Parser(text or "").parse()
        if node is None:
            return CompiledFilter(lambda record: True, None)
        return CompiledFilter(_compile(node), _execution_restriction(node))
    except RecursionError:
        raise invalid("filter", "the filter is nested too deeply") from None
    except FilterError as exc:
        raise invalid("filter", str(exc), f"Invalid filter: {exc}") from None
