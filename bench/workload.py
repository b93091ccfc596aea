"""The batches the benchmark runs, and the cases (size x command x mode) of a run. Pure: no I/O.

Every mode runs the very same batch: items of the catalog's ``hello`` job (packable, so packed mode takes
the real product path through ``jobs/runner``), each with explicit args so the command line of a task is
identical whether it runs packed, per item or from the naive loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JOB = "hello"
# "results": a no-op greeting that also stores itself as the item's result (hello --result), run packed
# only, beside the no-op case of the same size: the difference is what collecting results costs.
COMMANDS = ("noop", "sleep1", "results")
COMMAND_LABELS = {"noop": "no-op", "sleep1": "1 s", "results": "no-op + result"}
# Every 100th item fails (``hello --sleep -1`` is an argparse error, exit 2, retried once by the job's
# max_retries: 1), so reports hold log tails and the log-call target is measured on real work.
FAIL_EVERY = 100

FLOOR = "floor"
NAIVE = "a-naive"
THREADS = "a-threads"
PER_ITEM = "b-per-item"
PACKED = "c-packed"
PACKED_DEFAULT_POLL = "c-packed-default-poll"
MODES = (FLOOR, NAIVE, THREADS, PER_ITEM, PACKED, PACKED_DEFAULT_POLL)
PEER_THREADS = 32
MODE_TITLES = {
    FLOOR: "floor: one packed execution, no controller",
    NAIVE: "(a) naive loop: run_job + operation.result() per item",
    THREADS: f"(a') the peer: the official client in a pool of {PEER_THREADS} threads, run_job with the item's "
    "overrides + operation.result() per item",
    PER_ITEM: "(b) controller, one execution per item, concurrency 32",
    PACKED: "(c) controller, packed",
    PACKED_DEFAULT_POLL: "(c) controller, packed, default PollPolicy()",
}


def item_args(index: int, command: str) -> list[str]:
    """The hello arguments of item ``index``: a no-op greeting, a 1 s sleep, or a failure."""
    if index % FAIL_EVERY == FAIL_EVERY - 1:
        return ["--sleep", "-1"]
    if command == "noop":
        return [f"n{index}"]
    if command == "sleep1":
        return ["--sleep", "1", f"n{index}"]
    if command == "results":
        return ["--result", f"n{index}"]
    raise ValueError(f"unknown command {command!r}; expected one of {COMMANDS}")


def failing_items(size: int) -> int:
    return sum(1 for i in range(size) if i % FAIL_EVERY == FAIL_EVERY - 1)


def batch_spec(size: int, command: str, batch_id: str) -> dict[str, Any]:
    """A batch spec as a user would write it (``fanout run`` accepts the same as YAML)."""
    return {
        "batch_id": batch_id,
        "items": [{"key": f"item-{i:05d}", "job": JOB, "args": item_args(i, command)} for i in range(size)],
    }


@dataclass(frozen=True)
class Case:
    size: int
    command: str
    mode: str

    @property
    def batch_id(self) -> str:
        return f"bench-{self.mode}-{self.command}-{self.size}"

    @property
    def label(self) -> str:
        return f"{self.size} x {COMMAND_LABELS[self.command]}"


@dataclass(frozen=True)
class Matrix:
    """Which sizes run, and up to which size the slow baselines are measured rather than extrapolated."""

    sizes: dict[str, tuple[int, ...]]  # per command
    naive_max: int
    per_item_max: int
    threads_max: int
    default_poll_cases: tuple[tuple[int, str], ...]
    results_sizes: tuple[int, ...] = ()  # the "results" command, packed only

    def cases(self) -> list[tuple[Case, str | None]]:
        """Every case in run order (small first, so targets at small sizes are known early), each with
        why it is skipped, or None."""
        out: list[tuple[Case, str | None]] = []
        pairs = sorted((size, command) for command, sizes in self.sizes.items() for size in sizes)
        for size, command in pairs:
            for mode in (FLOOR, PACKED, PER_ITEM, THREADS, NAIVE):
                skip = None
                if mode == NAIVE and size > self.naive_max:
                    skip = f"naive loop above {self.naive_max} items"
                if mode == THREADS and size > self.threads_max:
                    skip = f"thread-pool peer above {self.threads_max} items"
                if mode == PER_ITEM and size > self.per_item_max:
                    skip = f"per-item above {self.per_item_max} items"
                out.append((Case(size, command, mode), skip))
            if (size, command) in self.default_poll_cases:
                out.append((Case(size, command, PACKED_DEFAULT_POLL), None))
        out.extend((Case(size, "results", PACKED), None) for size in self.results_sizes)
        return out


FULL = Matrix(
    sizes={"noop": (100, 1000, 10_000), "sleep1": (100, 200, 1000, 10_000)},
    naive_max=200,
    per_item_max=1000,
    threads_max=10_000,
    default_poll_cases=((1000, "sleep1"),),
    results_sizes=(10_000,),
)
QUICK = Matrix(
    sizes={"noop": (20, 100), "sleep1": (20, 100)},
    naive_max=20,
    per_item_max=100,
    threads_max=100,
    default_poll_cases=(),
    results_sizes=(100,),
)
