"""Shared fixtures and helpers for the whole suite.

What is collected is decided in pyproject.toml ``[tool.pytest.ini_options]``:
``--nbval-lax`` runs every notebook under notebooks/ and exercises/, and
``norecursedirs`` keeps out exercises/student/ (generated copies, tested on their
own) and hidden directories such as .ipynb_checkpoints.  That lives in the ini
file and not in a hook here because a conftest under tests/ is only consulted for
paths below tests/, and ``pytest notebooks/`` does not load it at all.

The helpers below start the servers of ``make lab`` and ``make app`` the way a
student does and stop them again (tests/test_lab.py, test_app.py, test_browser.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The environment running the tests; the servers come from the same one.
BIN = Path(sys.executable).parent
#: Upper bound for a server to answer; JupyterLab needs about 2 s here.
SERVER_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def root_flag() -> list[str]:
    """Jupyter servers refuse to run as root unless told; CI containers are root."""
    return ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


def jupyter_env(tmp: Path) -> dict[str, str]:
    """Environment that keeps the user's (and the venv's) Jupyter config untouched."""
    env = dict(os.environ)
    for var, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("IPYTHONDIR", "ipython")):
        d = tmp / sub
        d.mkdir(parents=True, exist_ok=True)
        env[var] = str(d)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("JUPYTER_PLATFORM_DIRS", None)
    return env


def lab_settings_dir(tmp: Path) -> Path:
    """An app-settings dir whose overrides.json turns off the "Jupyter news?" toast
    (it covers widgets in the bottom-right corner of a screenshot)."""
    d = tmp / "lab-settings"
    d.mkdir(parents=True, exist_ok=True)
    (d / "overrides.json").write_text(json.dumps(
        {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                          "checkForUpdates": False}}))
    return d


def lab_args(tmp: Path, port: int, token: str, allow_root: bool = True) -> list[str]:
    """Options for a quiet, local, token-protected JupyterLab (jupyter-tooling.md §2).

    ``allow_root=False`` leaves ``--allow-root`` to the caller (``make lab`` adds it)."""
    return ["--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--LabApp.app_settings_dir={lab_settings_dir(tmp)}",
            "--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(root_flag() if allow_root else [])]


def new_token() -> str:
    return secrets.token_hex(16)


def _get(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Server:
    """A running server process (a process group, so ``make``'s child dies too)."""

    def __init__(self, proc: subprocess.Popen, log: Path, base: str):
        self.proc, self.log, self.base = proc, log, base

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"

    def get(self, path: str, timeout: float = 10.0) -> int:
        return _get(self.base + path, timeout)


@contextlib.contextmanager
def serve(cmd: Sequence[str], *, env: dict[str, str], base: str, ready_path: str,
          log: Path, cwd: Path = REPO, timeout: float = SERVER_TIMEOUT_S) -> Iterator[Server]:
    """Start ``cmd`` in its own process group, wait until ``base + ready_path``
    answers 200, yield, then stop the whole group.

    Fails (with the server's log) when the process exits early or never answers
    within ``timeout`` seconds; nothing here can hang for longer.
    """
    with open(log, "wb") as out:
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = Server(proc, log, base)
    try:
        deadline = time.monotonic() + timeout
        status = None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{' '.join(cmd)!r} exited with {proc.returncode} before "
                            f"answering\n--- server log ---\n{server.log_text()}")
            try:
                status = server.get(ready_path, timeout=5)
            except OSError as e:        # connection refused while starting up
                status = repr(e)
            if status == 200:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{base}{ready_path.split('?')[0]} did not answer 200 within "
                            f"{timeout:.0f} s (last: {status})\n--- server log ---\n"
                            f"{server.log_text()}")
            time.sleep(0.25)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the whole process group (Jupyter then shuts its kernels down), wait
    until no member is left, SIGKILL whatever is still there after ``grace`` s.

    Waiting on ``proc`` alone is not enough: under ``make`` the server is a
    grandchild that outlives make by a second or two.
    """
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()                      # reap our direct child
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    proc.poll()


def make_cmd(target: str, var: str, args: Sequence[str]) -> list[str]:
    """``make <target> VAR="args"`` from the repository root, using this venv.

    ``-o .venv/.installed`` tells make the setup stamp is up to date: the tests
    already run inside the installed environment and must not reinstall it.
    ``BIN`` points make at that environment (the Makefile's default is .venv/bin).
    """
    quoted = " ".join(args)
    return ["make", "--no-print-directory", "-o", ".venv/.installed", target,
            f"BIN={BIN}", f"{var}={quoted}"]
