"""Start `lrs serve` as a subprocess on a fresh store over loopback, and always stop it.

Usage:
    with Server.start(backend="embedded") as server:
        ... talk to server.base_url with server.key / server.secret ...
        rss = server.peak_rss_bytes()
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"


class BenchError(Exception):
    """A benchmark cannot go on (server did not start, a request failed); the message says why."""


def free_port() -> int:
    """A port the kernel says is free on loopback (tiny race until the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _lrs_command() -> list[str]:
    # Prefer the `lrs` script of this interpreter's environment, so a bench run from the venv
    # never picks up another installation on PATH; `python -m lrs.cli` is the same entry point.
    script = Path(sys.executable).with_name("lrs")
    if script.exists():
        return [str(script)]
    found = shutil.which("lrs")
    return [found] if found else [sys.executable, "-m", "lrs.cli"]


@dataclass
class Server:
    backend: str  # "embedded" or "mongodb"
    port: int
    workdir: Path  # temporary: data directory and server log
    process: subprocess.Popen[bytes]
    key: str
    secret: str
    database: str
    mongodb_url: str | None = None
    keep_log: Path | None = None  # where to save the server log when the server is done
    env: dict[str, str] = field(default_factory=dict)  # the server's environment, for helpers
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @classmethod
    def start(
        cls,
        backend: str,
        *,
        mongodb_url: str | None = None,
        log_level: str = "warning",
        extra_env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
        keep_log: Path | None = None,
        launcher: list[str] | None = None,
    ) -> Server:
        """Start a server on a fresh store and wait until /xapi/about answers.

        `launcher` replaces the `lrs` command (its `serve ...` arguments follow), for a wrapper
        that runs `lrs serve` in its own process after some set-up (bench.celery_child)."""
        if backend == "mongodb" and not mongodb_url:
            raise BenchError("the mongodb back end needs LRS_MONGODB_URL")
        workdir = Path(tempfile.mkdtemp(prefix=f"lrs-bench-{backend}-"))
        port = free_port()
        key, secret = "bench-" + secrets.token_hex(4), secrets.token_urlsafe(24)
        database = f"bench_{secrets.token_hex(6)}"
        # Start from the caller's environment minus every LRS_ setting, so a developer's
        # configuration (Redis, another store, ...) cannot leak into the measured server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
        env.update(
            LRS_STORAGE=backend,
            LRS_DATA_DIR=str(workdir / "data"),
            LRS_DATABASE=database,
            LRS_HOST=LOOPBACK,
            LRS_PORT=str(port),
            LRS_PUBLIC_URL=f"http://{LOOPBACK}:{port}",
            LRS_ADMIN_KEY=key,
            LRS_ADMIN_SECRET=secret,
        )
        if mongodb_url:
            env["LRS_MONGODB_URL"] = mongodb_url
        env.update(extra_env or {})
        command = (launcher or _lrs_command()) + [
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--log-level",
            log_level,
        ]
        log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the child keeps writing to it
        try:
            process = subprocess.Popen(
                command,
                cwd=workdir,  # no stray .env or .lrs-data from the caller's directory
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C in the terminal reaches only the bench, which then stops
                # the server itself (after reading its peak RSS).
                start_new_session=True,
            )
        finally:
            log.close()
        server = cls(
            backend=backend,
            port=port,
            workdir=workdir,
            process=process,
            key=key,
            secret=secret,
            database=database,
            mongodb_url=mongodb_url,
            keep_log=keep_log,
            env=env,
        )
        try:
            server._wait_ready(ready_timeout)
        except BaseException:
            server.stop()
            server.cleanup(keep_log)
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/xapi/about"
        while True:
            if self.process.poll() is not None:
                raise BenchError(
                    f"the server exited with code {self.process.returncode} during start-up:\n"
                    + self.log_tail()
                )
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the server did not answer {url} within {timeout:.0f}s:\n" + self.log_tail()
                )
            time.sleep(0.1)

    def peak_rss_bytes(self) -> int | None:
        """Peak resident set size of the server process so far; None if unknown."""
        return peak_rss_bytes(self.process.pid) if self.process.poll() is None else None

    def data_bytes(self) -> int:
        """On-disk size of the embedded store (0 for MongoDB)."""
        root = self.workdir / "data"
        return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40, chars: int = 4000) -> str:
        # Bounded twice: JSON log lines can carry a whole traceback each.
        return "\n".join(self.log_text().splitlines()[-lines:])[-chars:]

    def problems(self) -> list[str]:
        """Log lines that signal a server-side problem (tracebacks, errors, warnings), in the
        plain uvicorn format or the JSON one."""
        markers = (
            "traceback",
            "exception",
            "error:",
            "warning:",
            '"level": "error"',
            '"level": "warning"',
            '"level": "critical"',
        )
        return [
            line[:500]
            for line in self.log_text().splitlines()
            if any(m in line.lower() for m in markers)
        ]

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful SIGTERM, SIGKILL if it hangs; then drop the temporary store. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.backend == "mongodb" and self.mongodb_url:
            _drop_mongodb(self.mongodb_url, self.database)

    def cleanup(self, keep_log: Path | None = None) -> None:
        """Remove the temporary directory, optionally saving the server log first."""
        if keep_log is not None and self.log_path.exists():
            keep_log.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.log_path, keep_log)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup(self.keep_log)


def vm_hwm_bytes(status: str) -> int | None:
    """The VmHWM line of a /proc/<pid>/status text, in bytes; None when it has none."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of a live process: the kernel keeps the high-water mark,
    so one read before the process stops gives the peak over its whole life. None when the
    process is gone or /proc is unavailable (not Linux)."""
    try:
        return vm_hwm_bytes(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None


def _drop_mongodb(url: str, database: str) -> None:
    """Drop the benchmark's throwaway database; a failure here must not hide the results."""
    try:
        from pymongo import MongoClient

        client: Any = MongoClient(url, serverSelectionTimeoutMS=5000)
        try:
            client.drop_database(database)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - best effort clean-up
        print(f"warning: could not drop MongoDB database {database}: {exc}", file=sys.stderr)
