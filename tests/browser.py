"""The tests' headless Chromium, driven over the DevTools protocol on a pipe: no packages.

``Chromium()`` starts Debian's ``chromium`` with ``--remote-debugging-pipe``: the browser reads
protocol messages from its file descriptor 3 and writes to its 4, each message JSON ended by
a NUL byte. ``open(path)`` loads a page in a fresh tab and waits for its load event;
``evaluate`` reads the DOM; ``problems`` are the page's console errors and warnings, its
uncaught exceptions and the browser's log entries of those levels. Every wait is bounded by
one deadline for the whole session, which raises ``BrowserTimeout`` naming what it waited
for; leaving the ``with`` block always ends the browser.

Without Chromium the tests that need it skip, saying how to enable them, unless
``ROUTER_REQUIRE_BROWSER=1`` (CI), under which they fail.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

__all__ = ["BrowserError", "BrowserTimeout", "Chromium", "Page", "chromium_path", "need_chromium"]

HOW = (
    "install Chromium (Debian: apt-get install chromium) to run the browser tests; "
    "set ROUTER_REQUIRE_BROWSER=1 to make its absence an error"
)
FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)
# Moves the pipe's ends to the descriptors Chromium expects (3: it reads, 4: it writes) and
# becomes Chromium. subprocess passes descriptors only at their own numbers, and a
# preexec_fn is not safe in a process with threads (the anyio tests leave some).
_TRAMPOLINE = (
    "import fcntl, os, sys\n"
    "r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 10) for fd in sys.argv[1:3])\n"
    "os.close(int(sys.argv[1])); os.close(int(sys.argv[2]))\n"
    "os.dup2(r, 3); os.dup2(w, 4)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


class BrowserError(AssertionError):
    """The browser failed a command, or a page failed to load or to evaluate."""


class BrowserTimeout(BrowserError):
    """The session's deadline passed while waiting on the browser."""


def chromium_path() -> str | None:
    """Debian's Chromium, or a ``chromium`` on PATH; None when there is neither."""
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


def need_chromium() -> str:
    """Chromium's path; skips the test without it (fails it under ROUTER_REQUIRE_BROWSER=1)."""
    path = chromium_path()
    if path is None:
        if os.environ.get("ROUTER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Chromium is required here (ROUTER_REQUIRE_BROWSER=1): {HOW}")
        pytest.skip(f"no Chromium (/usr/bin/chromium or chromium on PATH); {HOW}")
    return path


class Chromium:
    """A headless Chromium of the caller's own, with a fresh profile, for one ``with`` block.

    timeout_s bounds the whole session: starting, every command and every wait.
    """

    def __init__(self, path: str | None = None, *, timeout_s: float = 60.0) -> None:
        self.path = path or need_chromium()
        self.timeout_s = timeout_s
        self._deadline = 0.0
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []  # received, not yet waited for
        self.problems: list[str] = []  # console errors and warnings, exceptions, log entries

    def __enter__(self) -> Chromium:
        self._deadline = time.monotonic() + self.timeout_s
        self._profile = tempfile.mkdtemp(prefix="router-chromium-")
        self._stderr = open(Path(self._profile) / "stderr.log", "w+b")
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, str(to_browser), str(from_browser)]
                + [self.path, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
                pass_fds=(to_browser, from_browser),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except BaseException:
            self._close_files()
            raise
        finally:
            os.close(to_browser)  # the browser holds its own copies now
            os.close(from_browser)
        try:
            self.send("Browser.getVersion")  # it is up, and it speaks the protocol
        except BaseException:
            self._end()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._end()

    def open(self, path: Path) -> Page:
        """A new tab showing the file, once its load event has fired."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, attached["sessionId"])
        for domain in ("Runtime", "Log", "Page"):
            page.send(f"{domain}.enable")
        navigated = page.send("Page.navigate", {"url": path.resolve().as_uri()})
        if navigated.get("errorText"):
            raise BrowserError(f"{path} did not load: {navigated['errorText']}")
        self.wait_for("Page.loadEventFired", page.session)
        return page

    # --- the protocol ---------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send a command and return its result, keeping the events that arrive meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(f"the reply to {method}")
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self._note(reply)

    def wait_for(
        self, method: str, session: str = "", *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The first event of this method (of this tab's session) not yet waited for.

        timeout_s: a bound of this wait's own, within what is left of the session's."""
        limit = (self._deadline, f"the session's {self.timeout_s:g} s")
        if timeout_s is not None and time.monotonic() + timeout_s < self._deadline:
            limit = (time.monotonic() + timeout_s, f"this wait's {timeout_s:g} s")
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId", "") == session:
                    self._events.remove(event)
                    return event
            self._note(self._read(f"the event {method}", limit))

    def _note(self, message: dict[str, Any]) -> None:
        if "method" not in message:
            return
        self._events.append(message)
        problem = _problem(message["method"], message.get("params", {}))
        if problem:
            self.problems.append(problem)

    def _write(self, data: bytes) -> None:
        while data:
            if select.select([], [self._to_browser], [], self._left("to send a command"))[1]:
                data = data[os.write(self._to_browser, data) :]

    def _read(self, what: str, limit: tuple[float, str] | None = None) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if not select.select([self._from_browser], [], [], self._left(f"for {what}", limit))[0]:
                continue  # _left raises once the time is up
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise BrowserError(
                    f"Chromium closed its pipe while we waited for {what}{self._tail()}"
                )
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        reply: dict[str, Any] = json.loads(message)
        return reply

    def _left(self, what: str, limit: tuple[float, str] | None = None) -> float:
        """The seconds left before the limit (the session's unless given); raises at 0."""
        until, name = limit or (self._deadline, f"the session's {self.timeout_s:g} s")
        left = until - time.monotonic()
        if left <= 0:
            raise BrowserTimeout(f"Chromium did not answer {what} within {name}{self._tail()}")
        return left

    def _tail(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()[-15:]
        return ("; its stderr ends:\n" + "\n".join(lines)) if lines else ""

    def _end(self) -> None:
        """Ask the browser to close, kill it if it lingers, and remove its profile."""
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            try:
                message = {"id": self._next_id + 1, "method": "Browser.close", "params": {}}
                os.write(self._to_browser, json.dumps(message).encode() + b"\0")
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self._close_files()

    def _close_files(self) -> None:
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)


def _problem(method: str, params: dict[str, Any]) -> str:
    """The message worth failing a test for, or ""."""
    if method == "Runtime.consoleAPICalled" and params.get("type") in (
        "error",
        "warning",
        "assert",
    ):
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
        return f"console.{params['type']}: {text}"
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        thrown = details.get("exception", {}).get("description", details.get("text", ""))
        return f"uncaught exception: {thrown}"
    if method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
        entry = params["entry"]
        return f"log {entry['level']} ({entry.get('source', '')}): {entry.get('text', '')}"
    return ""


class Page:
    """One tab of the browser."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session

    def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.send(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The expression's value (JSON-like), evaluated in the page; raises on an error."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            thrown = details.get("exception", {}).get("description", details.get("text"))
            raise BrowserError(f"{expression!r} raised {thrown}")
        return result["result"].get("value")
