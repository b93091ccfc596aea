from __future__ import annotations

import io
import re

import pytest

from controller.progress import Progress

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counts(done_ok: int, failed: int = 0, timed_out: int = 0, running: int = 0, pending: int = 0) -> dict[str, int]:
    return {
        "pending": pending,
        "running": running,
        "succeeded": done_ok,
        "failed": failed,
        "timed_out": timed_out,
        "cancelled": 0,
        "not_launched": 0,
    }


def test_plain_mode_writes_at_most_one_line_per_interval_and_one_at_the_end() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(10_000, stream=out, is_terminal=False, clock=clock, interval=10.0)
    # 20 items/s for 100 s, polled every second: 100 updates, one line per 10 s.
    for second in range(101):
        clock.now = 1000.0 + second
        done = 20 * second
        progress.update(counts(done - done // 50, failed=done // 50, running=512, pending=10_000 - done - 512))
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 12  # t=0, 10, ..., 100, and the closing line
    assert lines[0] == "[fanout] 0/10,000 done (0 succeeded) · 512 running · 9,488 pending · - items/s · ETA -"
    assert lines[5] == (
        "[fanout] 1,000/10,000 done (980 succeeded, 20 failed) · 512 running · 8,488 pending · 20.0 items/s · ETA 7m30s"
    )
    assert lines[-1] == (
        "[fanout] 2,000/10,000 done (1,960 succeeded, 40 failed) · 512 running · 7,488 pending "
        "· 20.0 items/s overall · took 1m40s"
    )
    assert not ANSI.search(out.getvalue())


def test_rate_follows_the_recent_window_not_the_whole_run() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(100_000, stream=out, is_terminal=False, clock=clock, interval=1e9)
    # Slow start (1 item/s for 10 minutes), then 50 items/s for two minutes.
    done = 0
    for second in range(1, 721):
        clock.now = 1000.0 + second
        done += 1 if second <= 600 else 50
        progress.update(counts(done))
    rate = progress.rate()
    assert rate is not None
    assert rate == pytest.approx(50.0, rel=0.02)
    eta = progress.eta()
    assert eta == pytest.approx((100_000 - done) / rate)


def test_plain_mode_shows_every_outcome_that_occurred() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress(10, stream=out, is_terminal=False, clock=clock) as progress:
        progress.update({"succeeded": 5, "failed": 1, "timed_out": 2, "cancelled": 1, "not_launched": 1})
        clock.now += 3
    assert out.getvalue().splitlines()[-1] == (
        "[fanout] 10/10 done (5 succeeded, 1 failed, 2 timed out, 1 cancelled, 1 not launched) "
        "· 3.3 items/s overall · took 3.0s"
    )


def test_close_writes_a_line_even_without_updates_and_only_once() -> None:
    clock, out = FakeClock(), io.StringIO()
    progress = Progress(3, stream=out, is_terminal=False, clock=clock)
    progress.close()
    progress.close()
    progress.update(counts(3))
    assert out.getvalue() == "[fanout] 0/3 done (0 succeeded) · - items/s overall · took 0.0s\n"


def test_terminal_mode_draws_a_live_bar_with_counts_rate_and_eta() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress(200, stream=out, is_terminal=True, clock=clock) as progress:
        for second in range(1, 61):
            clock.now = 1000.0 + second
            progress.update(counts(second, failed=second // 20, running=10, pending=130))
    raw = out.getvalue()
    assert ANSI.search(raw), "a terminal gets escape sequences for colour and redrawing"
    assert "\x1b[1A" in raw, "the live display moves the cursor up to redraw in place"
    frames = ANSI.sub("", raw)
    assert "━" in frames
    # The last frame shows the final counts, rate and time left.
    assert "63/200 done · 1.1 items/s · ETA 2m10s" in frames
    assert "● 60 succeeded" in frames
    assert "● 3 failed" in frames
    assert "● 10 running" in frames
    assert "● 130 pending" in frames
    assert "[fanout]" not in frames


def test_terminal_mode_redraws_at_most_ten_times_a_second() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress(10_000, stream=out, is_terminal=True, clock=clock) as progress:
        # A thousand updates within one simulated second.
        for step in range(1000):
            clock.now = 1000.0 + step / 1000
            progress.update(counts(step))
    frames = ANSI.sub("", out.getvalue()).count("done ·")
    assert 2 <= frames <= 13


def test_terminal_detection_follows_the_stream() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock = FakeClock()
    plain, tty = io.StringIO(), Tty()
    for stream in (plain, tty):
        with Progress(1, stream=stream, clock=clock) as progress:
            progress.update(counts(1))
    assert plain.getvalue().startswith("[fanout] 1/1 done")
    assert ANSI.search(tty.getvalue())


def test_unknown_keys_are_a_programming_error() -> None:
    progress = Progress(1, stream=io.StringIO(), is_terminal=False)
    with pytest.raises(ValueError, match="unknown progress keys"):
        progress.update({"done": 1})


@pytest.fixture
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a test does to the loggers' handlers is undone after it."""
    import logging

    import prefect  # noqa: F401 - sets up Prefect's console handlers, which log_to_console replaces

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            monkeypatch.setattr(logger, "handlers", list(logger.handlers))


@pytest.mark.usefixtures("restored_logging")
def test_log_records_print_above_the_live_bar_on_the_same_console() -> None:
    import logging

    from rich.console import Console

    from controller.progress import log_to_console

    clock, out = FakeClock(), io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    log_to_console(console)
    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.setLevel(logging.INFO)  # as Prefect's logging settings have it
    try:
        with Progress(10, console=console, clock=clock) as progress:
            progress.update(counts(1, pending=9))
            logging.getLogger("prefect").info("Starting temporary server on http://127.0.0.1:8123\nSee https://x")
            logging.getLogger("prefect.flow_runs").info("a line from the flow run")
            logging.getLogger("prefect.task_runs").info("Finished in state Completed()")
            clock.now += 1
            progress.update(counts(10))
    finally:
        prefect_logger.setLevel(level)
    lines = ANSI.sub("", out.getvalue()).splitlines()
    logged = [i for i, line in enumerate(lines) if "a line from the flow run" in line]
    assert len(logged) == 1, lines
    # The record is a line of its own (no half of a bar in it), and the bar is drawn again below it.
    assert "done ·" not in lines[logged[0]]
    assert any("10/10 done" in line for line in lines[logged[0] :])
    assert not any("Finished in state" in line for line in lines)
    assert not any("temporary server" in line for line in lines)  # its address is dead once fanout exits


@pytest.mark.usefixtures("restored_logging")
def test_quiet_logging_keeps_warnings_only() -> None:
    import logging

    from rich.console import Console

    from controller.progress import log_to_console

    out = io.StringIO()
    log_to_console(Console(file=out, width=100), quiet=True)
    logging.getLogger("prefect.flow_runs").info("Beginning flow run")
    logging.getLogger("prefect").info("Starting temporary server; see https://docs.prefect.io")
    logging.getLogger("prefect.flow_runs").warning("launch 3 not started: quota")
    text = out.getvalue()
    assert "Beginning flow run" not in text
    assert "docs.prefect.io" not in text
    assert "launch 3 not started: quota" in text
