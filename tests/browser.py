"""Open an HTML file in headless Chromium and report what a reader would see.

Talks the DevTools protocol over ``--remote-debugging-pipe`` (NUL-separated JSON on file
descriptors 3 and 4), so no websocket client or browser driver is needed: loads the page, waits
for the load event, collects console errors and exceptions (including the report's iframes),
measures every image, and takes a full-page screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")

IMAGES_JS = """(() => {
  const docs = [document];
  for (const f of document.querySelectorAll('iframe')) {
    try { if (f.contentDocument) docs.push(f.contentDocument); } catch (e) {}
  }
  const imgs = docs.flatMap(d => Array.from(d.images));
  return JSON.stringify({
    images: imgs.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
    iframes: document.querySelectorAll('iframe').length,
    plots: docs.reduce((n, d) => n + d.querySelectorAll('.js-plotly-plot').length, 0),
    height: document.documentElement.scrollHeight,
  });
})()"""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    """What the browser saw: images (alt, complete, naturalWidth), errors, screenshot."""

    images: list[dict]
    iframes: int
    plots: int
    errors: list[str]
    screenshot: Path


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int,
                 profile: str) -> None:
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.profile = profile
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def stderr_tail(self) -> str:
        path = Path(self.profile) / "stderr.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError as err:
            raise RuntimeError("Chromium exited: " + self.stderr_tail()) from err
        deadline = time.monotonic() + timeout
        while True:
            reply = self.receive(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def receive(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe: " + self.stderr_tail())
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def wait_event(self, method: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self.receive(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event


def _above_4(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def _error_text(event: dict) -> str | None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return "exception: " + (details.get("exception", {}).get("description")
                                or details.get("text", ""))
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                            for a in params.get("args", []))
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
    return None


def load_page(html_path: Path, screenshot: Path, width: int = 1200,
              settle_s: float = 3.0, timeout_s: float = 120.0) -> PageLoad:
    """Open ``html_path`` in headless Chromium; raise FileNotFoundError without Chromium."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium executable on PATH")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # the child's ends above fd 4, so that moving them onto fds 3 and 4 cannot clobber them
    to_browser_r, from_browser_w = _above_4(to_browser_r), _above_4(from_browser_w)

    cmd = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--no-first-run",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--hide-scrollbars",
           "--allow-file-access-from-files", "--use-angle=swiftshader",
           "--enable-unsafe-swiftshader", "--disable-background-networking", "about:blank"]
    # Chromium reads commands on fd 3 and writes replies on fd 4
    shell = (f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} '
             f"{to_browser_r}<&- {from_browser_w}>&-")
    stderr = open(Path(profile) / "stderr.log", "w")  # noqa: SIM115 - closed with the browser
    proc = subprocess.Popen(["bash", "-c", shell, *cmd], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr,
                            pass_fds=(to_browser_r, from_browser_w))
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe = _Pipe(proc, to_browser_w, from_browser_r, profile)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                  session=session)
        pipe.events.clear()
        pipe.send("Page.navigate", {"url": Path(html_path).resolve().as_uri()},
                  session=session)
        pipe.wait_event("Page.loadEventFired", timeout_s)
        end = time.monotonic() + settle_s  # let the iframes' scripts draw
        while time.monotonic() < end:
            try:
                pipe.events.append(pipe.receive(end))
            except TimeoutError:
                break
        info = json.loads(pipe.send("Runtime.evaluate", {"expression": IMAGES_JS,
                                                        "returnByValue": True},
                                    session=session)["result"]["value"])
        shot = pipe.send("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True,
                          "clip": {"x": 0, "y": 0, "width": width,
                                   "height": min(info["height"], 16000), "scale": 1}},
                         session=session, timeout=timeout_s)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors = [e for e in map(_error_text, pipe.events) if e]
        return PageLoad(info["images"], info["iframes"], info["plots"], errors, screenshot)
    finally:
        try:
            pipe.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - already gone
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(to_browser_w)
        os.close(from_browser_r)
        stderr.close()
        shutil.rmtree(profile, ignore_errors=True)
