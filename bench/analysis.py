"""From raw measurements to what the benchmark reports: call kinds, quota-bound wall time, ratios, the
targets with PASS/FAIL, and the tables. Pure: no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bench.workload import COMMAND_LABELS, FLOOR, MODE_TITLES, NAIVE, PACKED, PACKED_DEFAULT_POLL, PER_ITEM, THREADS

LOGGING = "Logging.ListLogEntries"
RUN = "Jobs.RunJob"
# The quota each Cloud Run method is charged to, as controller.quota.Rates groups them.
WRITES = frozenset(
    {
        "Jobs.CreateJob",
        "Jobs.UpdateJob",
        "Jobs.DeleteJob",
        "Executions.CancelExecution",
        "Executions.DeleteExecution",
        "Operations.DeleteOperation",
    }
)


def call_kinds(requests: Mapping[str, int]) -> dict[str, int]:
    """Emulator request counts grouped by quota: run, write, read (Cloud Run) and logs."""
    kinds = {"run": 0, "write": 0, "read": 0, "logs": 0}
    for method, count in requests.items():
        if method == LOGGING:
            kinds["logs"] += count
        elif method == RUN:
            kinds["run"] += count
        elif method in WRITES:
            kinds["write"] += count
        elif method != "Emulator":
            kinds["read"] += count
    return kinds


def quota_bound_seconds(kinds: Mapping[str, int], rates: Mapping[str, int | None]) -> float:
    """The least wall time the same calls need under per-minute quotas: a sliding window of 60 s lets
    ``rate`` calls through per window, so ``n`` calls need ``ceil(n / rate) - 1`` full windows."""
    bound = 0.0
    for kind, calls in kinds.items():
        rate = rates.get(kind)
        if rate and calls:
            bound = max(bound, (math.ceil(calls / rate) - 1) * 60.0)
    return bound


def _key(row: Mapping[str, Any]) -> tuple[int, str]:
    return row["size"], row["command"]


def find(rows: list[dict[str, Any]], size: int, command: str, mode: str) -> dict[str, Any] | None:
    for row in rows:
        if (row["size"], row["command"], row["mode"]) == (size, command, mode) and row.get("status") == "ok":
            return row
    return None


# Each measured figure of a row over the thread-pool peer's (a') in the same case: under 1 beats the peer.
_PEER_RATIOS = {
    "wall_vs_peer": "wall_seconds",
    "calls_vs_peer": "cloud_run_calls",
    "cpu_vs_peer": "cpu_seconds",
    "rss_vs_peer": "rss_peak_bytes",
}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's wall time and call count relative to the naive loop (a), to the thread-pool peer (a') for
    wall, calls, CPU and peak RSS, and to the floor of its case."""
    for row in rows:
        if row.get("status") not in ("ok", "extrapolated"):
            continue
        naive = find(rows, row["size"], row["command"], NAIVE) or next(
            (r for r in rows if _key(r) == _key(row) and r["mode"] == NAIVE and r.get("status") == "extrapolated"),
            None,
        )
        floor = find(rows, row["size"], row["command"], FLOOR)
        peer = find(rows, row["size"], row["command"], THREADS)
        if peer and peer is not row:
            for name, field in _PEER_RATIOS.items():
                if peer.get(field) and row.get(field) is not None:
                    row[name] = row[field] / peer[field]
        if naive and naive.get("wall_seconds"):
            row["wall_vs_naive"] = row["wall_seconds"] / naive["wall_seconds"]
            if naive.get("cloud_run_calls") and row.get("cloud_run_calls") is not None:
                row["calls_vs_naive"] = row["cloud_run_calls"] / naive["cloud_run_calls"]
        if floor and floor.get("floor_seconds"):
            row["wall_vs_floor"] = row["wall_seconds"] / floor["floor_seconds"]


def extrapolate(rows: list[dict[str, Any]], skipped: list[dict[str, Any]], rates: Mapping[str, int | None]) -> None:
    """Fill skipped baseline rows with a linear estimate from the largest measured size of the same mode
    and command: both baselines cost a fixed amount per item."""
    for row in skipped:
        measured = [r for r in rows if r["mode"] == row["mode"] and r["command"] == row["command"]]
        measured = [r for r in measured if r.get("status") == "ok"]
        if not measured:
            continue
        base = max(measured, key=lambda r: r["size"])
        scale = row["size"] / base["size"]
        calls = {k: round(v * scale) for k, v in base["calls"].items()}
        row.update(
            status="extrapolated",
            extrapolated_from=base["size"],
            wall_seconds=base["wall_seconds"] * scale,
            cloud_run_calls=round(base["cloud_run_calls"] * scale),
            calls=calls,
            quota_bound_seconds=quota_bound_seconds(calls, rates),
        )


# ---------------------------------------------------------------- targets


def _target(name: str, ok: bool | None, detail: str) -> dict[str, Any]:
    return {"target": name, "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"), "detail": detail}


def _marginal_per_item(
    rows: list[dict[str, Any]], metric: str, scale: float = 1.0
) -> list[tuple[str, float, dict[str, Any], dict[str, Any]]]:
    """(command, ``metric`` per item from 1,000 to 10,000 packed items x ``scale``, small row, large row) for
    each command measured at both sizes."""
    out = []
    for command in ("noop", "sleep1"):
        small, large = find(rows, 1000, command, PACKED), find(rows, 10_000, command, PACKED)
        if small and large:
            out.append((command, (large[metric] - small[metric]) * scale / 9000, small, large))
    return out


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each checked against this run's numbers."""
    out = []
    packed_10k = [r for r in (find(rows, 10_000, c, PACKED) for c in ("noop", "sleep1")) if r]
    if packed_10k:
        for r in packed_10k:
            calls, logs = r["calls"], r["calls"].get("logs", 0)
            out.append(
                _target(
                    f"10,000 items packed ({r['command']}): <= 10 run, <= 200 Cloud Run calls, <= 20 entries:list",
                    calls["run"] <= 10 and r["cloud_run_calls"] <= 200 and logs <= 20,
                    f"{calls['run']} run, {r['cloud_run_calls']} Cloud Run calls, {logs} entries:list "
                    f"for {r['log_tails']} log tails",
                )
            )
    else:
        out.append(_target("10,000 items packed: call counts", None, "10,000-item case not run (--quick?)"))

    packed, floor = find(rows, 1000, "sleep1", PACKED), find(rows, 1000, "sleep1", FLOOR)
    if packed and floor:
        ratio = packed["wall_seconds"] / floor["floor_seconds"]
        out.append(
            _target(
                "packed 1,000 x 1 s, parallelism 100: wall <= 1.3x floor",
                ratio <= 1.3,
                f"{packed['wall_seconds']:.1f} s vs floor {floor['floor_seconds']:.1f} s = {ratio:.2f}x",
            )
        )
    else:
        out.append(_target("packed 1,000 x 1 s: wall <= 1.3x floor", None, "case not run"))

    # Overhead per item is the marginal cost from 1,000 to 10,000 items (as for memory below): the fixed
    # costs of a batch (clients, first calls, templates) are not per item.
    marginal = _marginal_per_item(rows, "cpu_seconds", scale=1000)  # ms per item
    if marginal:
        out.append(
            _target(
                "packed: controller CPU < 1 ms per item (marginal, 1,000 -> 10,000 items)",
                all(ms < 1.0 for _, ms, _, _ in marginal),
                ", ".join(
                    f"{c}: {s['cpu_seconds']:.2f} -> {big['cpu_seconds']:.2f} s = {ms:.2f} ms/item "
                    f"(all-in {s['cpu_ms_per_item']:.2f} and {big['cpu_ms_per_item']:.2f} ms/item)"
                    for c, ms, s, big in marginal
                ),
            )
        )
    else:
        out.append(_target("packed: controller CPU < 1 ms per item", None, "1,000 and 10,000 cases not both run"))

    growth = _marginal_per_item(rows, "rss_peak_bytes")  # bytes per item
    if growth:
        out.append(
            _target(
                "packed: peak RSS growth < 2 KB per item from 1,000 to 10,000 items",
                all(g < 2048 for _, g, _, _ in growth),
                ", ".join(
                    f"{c}: {s['rss_peak_bytes'] / 2**20:.0f} -> {big['rss_peak_bytes'] / 2**20:.0f} MiB = "
                    f"{g / 1024:.2f} KiB/item"
                    for c, g, s, big in growth
                ),
            )
        )
    else:
        out.append(_target("packed: peak RSS growth < 2 KB per item", None, "1,000 and 10,000 cases not both run"))

    out.append(_results_cost(rows))
    out.append(_beats_peer(rows))
    naive, per_item = find(rows, 200, "sleep1", NAIVE), find(rows, 200, "sleep1", PER_ITEM)
    if naive and per_item:
        speedup = naive["wall_seconds"] / per_item["wall_seconds"]
        out.append(
            _target(
                "(b) >= 10x faster than (a) at 200 x 1 s",
                speedup >= 10,
                f"(a) {naive['wall_seconds']:.1f} s, (b) {per_item['wall_seconds']:.1f} s = {speedup:.1f}x",
            )
        )
    else:
        out.append(_target("(b) >= 10x faster than (a) at 200 x 1 s", None, "200 x 1 s case not run"))
    return out


def _results_cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest packed case whose every succeeding item wrote a result meets the packed call targets, and
    what collecting the results cost beside the no-op case of the same size."""
    name = "packed with a result from every item: <= 10 run, <= 200 Cloud Run calls, <= 20 entries:list"
    with_results = [r for r in rows if r["command"] == "results" and r["mode"] == PACKED and r.get("status") == "ok"]
    if not with_results:
        return _target(name, None, "results case not run")
    r = max(with_results, key=lambda row: row["size"])
    calls, logs = r["calls"], r["calls"].get("logs", 0)
    ok = calls["run"] <= 10 and r["cloud_run_calls"] <= 200 and logs <= 20 and r["results"] == r["succeeded"]
    detail = (
        f"{r['size']:,} items, {r['results']:,} results: {calls['run']} run, {r['cloud_run_calls']} Cloud Run "
        f"calls, {logs} entries:list"
    )
    if (base := find(rows, r["size"], "noop", PACKED)) and base.get("status") == "ok":
        detail += (
            f"; beside the no-op case: wall {r['wall_seconds']:.1f} vs {base['wall_seconds']:.1f} s, controller CPU "
            f"{r['cpu_seconds']:.2f} vs {base['cpu_seconds']:.2f} s, peak RSS {r['rss_peak_bytes'] / 2**20:.0f} vs "
            f"{base['rss_peak_bytes'] / 2**20:.0f} MiB"
        )
    return _target(name, ok, detail)


def _beats_peer(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """(c) packed is faster than the thread-pool peer (a') and makes fewer Cloud Run calls at every size
    where both ran."""
    name = "(c) faster and fewer calls than the thread-pool peer (a') at every size"
    pairs = [(row, find(rows, row["size"], row["command"], THREADS)) for row in rows if row["mode"] == PACKED]
    measured = [(packed, peer) for packed, peer in pairs if packed.get("status") == "ok" and peer is not None]
    if not measured:
        return _target(name, None, "no case with both")
    ok = all(p["wall_seconds"] < t["wall_seconds"] and p["cloud_run_calls"] < t["cloud_run_calls"] for p, t in measured)
    detail = "; ".join(
        f"{p['size']:,} x {p['command']}: {p['wall_seconds'] / t['wall_seconds']:.2f}x wall, "
        f"{p['cloud_run_calls'] / t['cloud_run_calls']:.2f}x calls"
        for p, t in measured
    )
    return _target(name, ok, detail)


# ---------------------------------------------------------------- tables


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


MODE_SHORT = {
    FLOOR: "floor",
    NAIVE: "(a) naive",
    THREADS: "(a') 32 threads",
    PER_ITEM: "(b) per-item",
    PACKED: "(c) packed",
    PACKED_DEFAULT_POLL: "(c) packed, default poll",
}
COLUMNS = (
    "case",
    "mode",
    "wall s",
    "vs (a)",
    "vs (a') wall",
    "vs floor",
    "Cloud Run calls",
    "vs (a') calls",
    "run",
    "read",
    "write",
    "entries:list",
    "tails",
    "CPU s",
    "vs (a') CPU",
    "CPU ms/item",
    "peak RSS MiB",
    "vs (a') RSS",
    "quota-bound wall",
)


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for row in rows:
        status = row.get("status")
        case = f"{row['size']:,} x {COMMAND_LABELS[row['command']]}"
        mode = MODE_SHORT[row["mode"]]
        if status not in ("ok", "extrapolated"):
            out.append([case, mode, f"{status}: {row.get('reason', '')}", *[""] * (len(COLUMNS) - 3)])
            continue
        calls = row.get("calls", {})
        wall = row["wall_seconds"]
        if status == "extrapolated":
            wall_text = f"~{wall:,.0f} (skipped; extrapolated from {row['extrapolated_from']})"
        else:
            wall_text = f"{wall:.1f}"
        measured = status == "ok"
        quota = row.get("quota_bound_seconds")
        out.append(
            [
                case,
                mode,
                wall_text,
                _ratio(row.get("wall_vs_naive")),
                _ratio(row.get("wall_vs_peer")),
                _ratio(row.get("wall_vs_floor")),
                f"{'~' if not measured else ''}{row['cloud_run_calls']:,}",
                _ratio(row.get("calls_vs_peer")),
                f"{calls.get('run', 0):,}",
                f"{calls.get('read', 0):,}",
                f"{calls.get('write', 0):,}",
                f"{calls.get('logs', 0):,}",
                str(row.get("log_tails", "")) if measured else "",
                _num(row.get("cpu_seconds"), ".2f") if measured else "",
                _ratio(row.get("cpu_vs_peer")) if measured else "",
                _num(row.get("cpu_ms_per_item"), ".3f") if measured else "",
                _num(row["rss_peak_bytes"] / 2**20, ".0f") if measured else "",
                _ratio(row.get("rss_vs_peer")) if measured else "",
                ("~" if not measured else "") + (f"{quota / 60:.0f} min" if quota else "0"),
            ]
        )
    return out


def markdown(header: list[str] | tuple[str, ...], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in body]
    return "\n".join(lines)


def results_table(rows: list[dict[str, Any]]) -> str:
    return markdown(COLUMNS, table_rows(rows))


def targets_table(checks: list[dict[str, Any]]) -> str:
    return markdown(("target", "result", "measured"), [[c["target"], c["result"], c["detail"]] for c in checks])


def legend() -> str:
    return "\n".join(f"- {MODE_SHORT[mode]}: {title}" for mode, title in MODE_TITLES.items())
