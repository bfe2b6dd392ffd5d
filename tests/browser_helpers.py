"""Open a local HTML file in headless Chromium and report what the browser saw.

Driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``: the
browser reads commands on fd 3 and writes on fd 4, NUL-separated JSON), so no port,
no websocket library and nothing to download: only Debian's ``chromium``. What it
returns comes from the browser itself: every request the page made
(``Network.requestWillBeSent``), every console message, exception and log entry (a
Content-Security-Policy violation is one), and the images and tables of the DOM after
the load event, with each image's decoded width.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-pipe",
]  # fmt: skip

PROBE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
                                                  width: i.naturalWidth})),
  tables: document.querySelectorAll('table').length,
  title: document.title,
})"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Visit:
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    """Console messages of level error/warning, uncaught exceptions, error log entries."""
    dom: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes | None = None

    @property
    def requests_leaving_the_file(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file://", "data:"))]


class _Pipe:
    def __init__(self, proc: subprocess.Popen[bytes], write_fd: int, read_fd: int) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params: Any
             ) -> dict[str, Any]:  # fmt: skip
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read_message(deadline))


def visit(page: Path, *, screenshot: bool = False, width: int = 1280, height: int = 1600
          ) -> Visit:  # fmt: skip
    """Load ``page`` (a file) and return what the browser saw."""
    binary = chromium()
    assert binary, "chromium is not installed"
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def child_fds() -> None:  # the browser's fd 3 reads commands, fd 4 writes replies
        # Copies first: a pipe end may itself be fd 3 or 4, and dup2 onto itself would
        # keep it close-on-exec.
        commands, replies = os.dup(to_browser_r), os.dup(from_browser_w)
        os.dup2(commands, 3)
        os.dup2(replies, 4)

    with tempfile.TemporaryDirectory(prefix="metasuite-chromium-") as profile:
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child_fds,
            close_fds=False,  # else fds 3 and 4, made by child_fds, are closed after it
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        pipe = _Pipe(proc, to_browser_w, from_browser_r)
        try:
            target = pipe.call("Target.createTarget", url="about:blank", timeout=60)["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Network", "Runtime", "Log", "Page"):
                pipe.call(f"{domain}.enable", session)
            pipe.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)  # fmt: skip
            pipe.call("Page.navigate", session, url=page.resolve().as_uri())
            pipe.wait_for("Page.loadEventFired", timeout=60)
            result = pipe.call("Runtime.evaluate", session, expression=PROBE, returnByValue=True)
            out = Visit(dom=json.loads(result["result"]["value"]))
            if screenshot:
                shot = pipe.call("Page.captureScreenshot", session, format="png")
                out.screenshot = base64.b64decode(shot["data"])
            time.sleep(0.2)  # late console messages
            pipe.call("Runtime.evaluate", session, expression="1")
            _collect(pipe.events, out)
            with contextlib.suppress(RuntimeError, TimeoutError):
                pipe.call("Browser.close", timeout=5)
        finally:
            os.close(to_browser_w)
            os.close(from_browser_r)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return out


def _collect(events: list[dict[str, Any]], out: Visit) -> None:
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            out.requests.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning"):
            args = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            out.console.append(f"console.{params['type']}: {args}")
        elif method == "Runtime.exceptionThrown":
            out.console.append(f"exception: {params['exceptionDetails'].get('text')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            out.console.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
