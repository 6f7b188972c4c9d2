"""Drive a headless Chromium through the Chrome DevTools Protocol, with no extra dependency.

Chromium is started with ``--remote-debugging-pipe``: it reads CDP commands from file
descriptor 3 and writes replies and events to descriptor 4, each message one JSON object ended
by a NUL byte (the transport Puppeteer and Playwright use). That needs neither a TCP port nor a
websocket client, and nothing else from the network: the browser runs with networking features
off, DNS mapped to nowhere, and each page's network emulated offline.

Usage::

    with Chromium() as browser:
        page = browser.new_page()
        page.goto(path.as_uri())
        page.wait_for("document.readyState === 'complete'")
        assert page.console_errors == []
        page.screenshot("shot.png")
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: Flags that keep Chromium from reaching the network or the user's profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
)


class BrowserError(RuntimeError):
    """Chromium failed to start, died, timed out, or answered a command with an error."""


def find_chromium() -> str | None:
    """Path of a Chromium executable (``/usr/bin/chromium`` or one on PATH), else None."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """One headless Chromium process with a fresh profile; use as a context manager."""

    def __init__(
        self,
        executable: str | None = None,
        *,
        window_size: tuple[int, int] = (1280, 900),
        timeout: float = 20.0,
    ) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no Chromium executable found (/usr/bin/chromium or on PATH)")
        self.window_size = window_size
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._next_id = 0
        self._buffer = b""
        #: browser-level events (no page session), e.g. ``Browser.downloadProgress``.
        self.events: list[dict[str, Any]] = []
        self._pages: dict[str, Page] = {}

    # -- process ------------------------------------------------------------------------

    def start(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="probekit-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:
            # Chromium expects its command pipe on fd 3 and its reply pipe on fd 4. Copy both
            # out of the way first so that one dup2 cannot clobber the other.
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, 3)
            os.dup2(w, 4)
            os.set_inheritable(3, True)  # dup2 onto itself would keep close-on-exec
            os.set_inheritable(4, True)

        width, height = self.window_size
        args = [
            self.executable,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile.name}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            close_fds=False,  # fds 3 and 4 are inherited; every other Python fd is CLOEXEC
            preexec_fn=child_fds,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.send("Target.setDiscoverTargets", {"discover": False})
        return self

    def close(self) -> None:
        """Ask Chromium to exit, kill it if it does not, and remove the profile."""
        if self._proc is not None:
            if self._proc.poll() is None:
                try:
                    self._write({"id": self._new_id(), "method": "Browser.close"})
                    self._proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self._proc.kill()
                    self._proc.wait(timeout=5)
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._stderr.close()
            self._proc = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stderr_text(self) -> str:
        """What Chromium has written to stderr so far (for failure messages)."""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    # -- protocol -----------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode("utf-8") + b"\0"
        while data:
            written = os.write(self._to_browser, data)
            data = data[written:]

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._from_browser], [], [], min(remaining, 0.5))
            if not ready:
                if self._proc is not None and self._proc.poll() is not None:
                    raise BrowserError(f"Chromium exited early:\n{self.stderr_text()[-2000:]}")
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed its pipe:\n{self.stderr_text()[-2000:]}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _dispatch(self, message: dict[str, Any]) -> None:
        page = self._pages.get(message.get("sessionId", ""))
        if page is not None:
            page._on_event(message["method"], message.get("params", {}))
        else:
            self.events.append(message)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one CDP command and return its ``result``; events seen meanwhile are kept."""
        message: dict[str, Any] = {"id": self._new_id(), "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        self._write(message)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self._dispatch(reply)

    def pump(self, seconds: float) -> None:
        """Read and dispatch events for ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._dispatch(self._read_message(deadline))
            except BrowserError as err:
                if "timed out" in str(err):
                    return
                raise

    def new_page(self, *, offline: bool = True) -> Page:
        """Open a blank tab and attach to it; with ``offline`` its network is emulated off."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        self._pages[session] = page
        for domain in ("Page", "Runtime", "Log", "Network"):
            page.send(f"{domain}.enable")
        if offline:
            page.send(
                "Network.emulateNetworkConditions",
                {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
            )
        return page


class Page:
    """One attached tab: navigate, evaluate JavaScript, collect errors, take screenshots."""

    def __init__(self, browser: Chromium, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        #: console.error calls, uncaught exceptions and browser log errors (CSP, network...).
        self.console_errors: list[str] = []
        #: every console message as (level, text).
        self.console: list[tuple[str, str]] = []
        #: URLs of every network request the page made (file:, data: and http: alike).
        self.requests: list[str] = []
        self._loaded = False

    def send(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return self.browser.send(method, params, session_id=self.session_id, **kw)

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])
            )
            self.console.append((params.get("type", ""), text))
            if params.get("type") in ("error", "assert"):
                self.console_errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            self.console_errors.append(f"uncaught exception: {description}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append((entry.get("level", ""), entry.get("text", "")))
            if entry.get("level") == "error":
                self.console_errors.append(
                    f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
                )
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))
        elif method == "Page.loadEventFired":
            self._loaded = True

    def goto(self, url: str, timeout: float = 15.0) -> None:
        """Navigate and wait for the load event."""
        self._loaded = False
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}")
        deadline = time.monotonic() + timeout
        while not self._loaded:
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not finish loading in {timeout} s")
            self.browser.pump(0.05)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """Value of a JavaScript expression (promises awaited); a thrown error raises."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluating {expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll until ``expression`` is truthy; return its value or raise on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression!r} still falsy after {timeout} s")
            self.browser.pump(interval)

    def screenshot(self, path: str | os.PathLike, full_page: bool = True) -> Path:
        """Save a PNG of the viewport, or of the whole page with ``full_page``."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
        data = self.send("Page.captureScreenshot", params, timeout=30.0)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
