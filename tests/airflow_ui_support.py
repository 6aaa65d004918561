"""An Airflow API server with the Campaigns plugin, and headless Chromium to look at it.

Shared by tests/test_plugin_campaigns.py and docs/images/screenshot.py (which puts this folder on
`sys.path`, as pytest does). The server runs on SQLite metadata with the simple auth manager and
known passwords, loads this repository's `plugins/` folder and reads the campaign database through
`AIRFLOW_CONN_RECSYS_DB`. Chromium is driven over the DevTools protocol (a websocket; no extra
dependency); it is the Debian package `chromium`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recsys.config.settings import PROJECT_ROOT
from recsys.db import airflow_connection

AIRFLOW = Path(sys.executable).with_name("airflow")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PASSWORDS = {"admin": "admin-pw-1", "viewer1": "viewer-pw-1"}
CAMPAIGNS_PAGE = "/plugin/campaigns"  # the plugin's entry in the Airflow UI (Browse > Campaigns)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(home: Path, campaign_url: str) -> dict[str, str]:
    """The environment of an Airflow home in `home` serving the plugin over `campaign_url`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    (home / "dags").mkdir(parents=True, exist_ok=True)
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps(PASSWORDS))
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PROJECT_ROOT / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__AUTH_MANAGER="airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer1:viewer",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(passwords),
        AIRFLOW__API_AUTH__JWT_SECRET=uuid.uuid4().hex,
        AIRFLOW__API__WORKERS="1",
        AIRFLOW_CONN_RECSYS_DB=airflow_connection(campaign_url),
        RECSYS_DATABASE_URL="",
        OMP_NUM_THREADS="1",
    )
    return env


def migrated_airflow_home(home: Path, campaign_url: str) -> dict[str, str]:
    """`airflow_env` after `airflow db migrate` has created the SQLite metadata in `home`."""
    env = airflow_env(home, campaign_url)
    subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return env


@contextlib.contextmanager
def api_server(home: Path, env: dict[str, str]) -> Iterator[str]:
    """Base URL of a running `airflow api-server` (log in `home/api-server.log`); stopped at the end."""
    port = _free_port()
    log = (home / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [str(AIRFLOW), "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"airflow api-server exited: {(home / 'api-server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError("airflow api-server did not answer within 180 s") from None
                time.sleep(1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def request(url: str, *, token: str | None = None, cookie: str | None = None) -> tuple[int, bytes]:
    """GET `url` with a bearer token or the UI's `_token` cookie: status and body (errors too)."""
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if cookie is not None:
        req.add_header("Cookie", f"_token={cookie}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def login(base: str, user: str) -> str:
    """An access token for `user` (one of PASSWORDS) from the simple auth manager."""
    body = json.dumps({"username": user, "password": PASSWORDS[user]}).encode()
    req = urllib.request.Request(f"{base}/auth/token", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)["access_token"]


class Chromium:
    """Headless Chromium driven over the DevTools protocol (a websocket; no extra dependency)."""

    def __init__(self, exe: str, *, window: tuple[int, int] = (1600, 1000)) -> None:
        from websockets.sync.client import connect as ws_connect

        self.profile = tempfile.mkdtemp(prefix="recsys-chromium-")
        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                f"--window-size={window[0]},{window[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            page = next(t for t in json.load(resp) if t["type"] == "page")
        self.stack = contextlib.ExitStack()
        self.ws = self.stack.enter_context(ws_connect(page["webSocketDebuggerUrl"], max_size=None))
        self.ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self.ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str) -> Any:
        return self.send("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.eval(expression)
            except RuntimeError as exc:
                # A navigation (the login form's redirect) can replace the page while the
                # expression runs; poll again on the new page rather than fail.
                transient = ("navigated or closed", "context was destroyed", "Cannot find default execution context")
                if not any(text in str(exc) for text in transient):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {expression}")

    def type_into(self, selector: str, text: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def close(self) -> None:
        if getattr(self, "stack", None) is not None:
            self.stack.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)


IFRAME_TEXT = """(() => {
  const f = document.querySelector('iframe');
  const t = f && f.contentDocument && f.contentDocument.body && f.contentDocument.body.innerText;
  return t && t.includes('Model leaderboard') ? t : '';
})()"""


def open_campaigns_page(browser: Chromium, base: str, user: str = "admin") -> tuple[str, str]:
    """Log in through the UI's login form and open Browse > Campaigns, scrolled to the top.

    Returns the page's text (inside the UI's iframe) and the text of the UI around it."""
    browser.send("Page.enable")
    next_url = f"{base}{CAMPAIGNS_PAGE}"
    browser.send("Page.navigate", url=f"{base}/auth/login?next={urllib.parse.quote(next_url, safe='')}")
    browser.wait_for("!!document.querySelector('input[name=username]')")
    browser.type_into("input[name=username]", user)
    browser.type_into("input[name=password]", PASSWORDS[user])
    browser.wait_for("!document.querySelector('button[type=submit]').disabled")
    browser.eval("document.querySelector('button[type=submit]').click()")
    browser.wait_for("!location.pathname.startsWith('/auth')")
    browser.send("Page.navigate", url=next_url)
    page_text = browser.wait_for(IFRAME_TEXT)
    nav_text = browser.eval("document.body.innerText")
    browser.eval("document.querySelector('iframe').contentWindow.scrollTo(0, 0)")
    return page_text, nav_text
