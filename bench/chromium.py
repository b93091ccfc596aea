"""Just enough of Chromium's DevTools protocol to load a page headless and ask it questions (no npm, no
driver binary): Debian's ``chromium`` package. Used by the report page's browser tests and its benchmark."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

DEADLINE_S = 60.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


def find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class Browser:
    """Just enough of the DevTools protocol: one page target, commands, and the events it reports."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ws: ClientConnection) -> None:
        self.loop = loop
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        self.reader = loop.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message and message["id"] in self.waiting:
                self.waiting.pop(message["id"]).set_result(message)
            elif "method" in message:
                self.events.append(message)

    async def _call(self, method: str, params: dict[str, Any], session: str | None) -> dict[str, Any]:
        call_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.waiting[call_id] = future
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, DEADLINE_S)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """A command on the current page (or on the browser before a page is open)."""
        return self.loop.run_until_complete(self._call(method, params, self.session))

    def open_page(self) -> None:
        self.session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")
        self.events.clear()

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, deadline_s: float = DEADLINE_S) -> float:
        """Poll until ``expression`` is truthy; the seconds it took."""
        started = time.monotonic()
        while not self.evaluate(expression):
            if time.monotonic() - started > deadline_s:
                raise TimeoutError(f"page never satisfied {expression!r} in {deadline_s}s")
            self.loop.run_until_complete(asyncio.sleep(0.02))
        return time.monotonic() - started

    def load(self, path: Path) -> float:
        """Navigate to a local file and wait for the page's ready marker; seconds from navigate to ready."""
        started = time.monotonic()
        self.call("Page.navigate", url=path.as_uri())
        self.wait_for("document.body && document.body.dataset.ready === 'true'")
        return time.monotonic() - started

    def navigate(self, url: str) -> None:
        """Open ``url`` in the current page (a served page: its own scripts say when it is ready)."""
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """What the page shows as text now."""
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def screenshot(self, path: Path) -> None:
        """A PNG of the page as it is rendered now."""
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, browser-logged errors (CSP violations) and dialogs."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry'].get('text')}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {params.get('message')}")
        return found

    def requested_urls(self) -> list[str]:
        return [
            e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"
        ]


@contextmanager
def launched(executable: str, profile: Path) -> Iterator[Browser]:
    """A headless Chromium with an empty profile in ``profile``, stopped on exit."""
    process = subprocess.Popen(
        [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    loop = asyncio.new_event_loop()
    try:
        # Chromium writes the port it picked, then the browser's WebSocket path, to this file.
        port_file = profile / "DevToolsActivePort"
        started = time.monotonic()
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if process.poll() is not None or time.monotonic() - started > DEADLINE_S:
                raise RuntimeError(f"chromium did not start (exit code {process.poll()})")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        ws = loop.run_until_complete(connect(f"ws://127.0.0.1:{port}{path}", max_size=None))
        browser = Browser(loop, ws)
        yield browser
        loop.run_until_complete(ws.close())
        loop.run_until_complete(asyncio.gather(browser.reader, return_exceptions=True))
    finally:
        loop.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
