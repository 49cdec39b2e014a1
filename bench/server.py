"""Start `lrs serve` as a subprocess on a fresh store over loopback, and always stop it.

Usage:
    with Server.start(backend="embedded") as server:
        ... talk to server.base_url with server.key / server.secret ...
        rss = server.peak_rss_bytes()

`lrs serve` starts a supervisor that forks the API processes when `workers=N` (> 1), and also
when derivation runs in a process of its own (LRS_DERIVATION=process, which `auto` resolves to on
the embedded store of a machine with several cores): N API processes and the derivation process.
The RSS figures are then the sum over the supervisor's children (not the supervisor itself).
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
from collections.abc import Callable, Mapping
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


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Graceful SIGTERM, SIGKILL if it hangs. Idempotent."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
    workers: int = 1  # API processes (`lrs serve --workers`)
    # Who derives progress, as `lrs serve` resolves LRS_DERIVATION in this server's environment.
    derivation: str = "inprocess"
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "server.log"

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def processes(self) -> int:
        """The processes measured: the API processes, plus the derivation process if any."""
        return self.workers + (1 if self.derivation == "process" else 0)

    def processes_note(self, figure: str, fields: str = "VmHWM") -> str:
        """`[notes]` text on what this server's RSS figures are made of (see processes_note)."""
        return processes_note(self.workers, self.derivation, figure, fields)

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
        workers: int = 1,
    ) -> Server:
        """Start a server on a fresh store and wait until /xapi/about answers (and, under a
        supervisor, until it has forked every API process and the derivation process).

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
        derivation = derivation_in_effect(env, workers)
        command = (launcher or _lrs_command()) + [
            "serve",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--log-level",
            log_level,
        ]
        if workers > 1:
            command += ["--workers", str(workers)]
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
            workers=workers,
            derivation=derivation,
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
                if httpx.get(url, timeout=2.0).status_code == 200 and (
                    len(self.api_pids()) >= self.processes
                ):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the server did not answer {url} with its {self.processes} processes "
                    f"(derivation {self.derivation}; {len(self.api_pids())} seen) within "
                    f"{timeout:.0f}s:\n" + self.log_tail()
                )
            time.sleep(0.1)

    def api_pids(self) -> list[int]:
        """The processes measured: the one started, or when it is a supervisor its children
        (the API processes and the derivation process; the supervisor's own memory is left
        out: it forks before it builds anything). Whatever children it has, rather than a
        guess from the settings: `lrs serve` alone has none."""
        if self.process.poll() is not None:
            return []
        pid = self.process.pid
        return child_pids(pid) or [pid]

    def peak_rss_bytes(self) -> int | None:
        """Peak resident set size (VmHWM) of the API process so far, or under a supervisor
        the sum over its children (pages shared since the fork count once per process, so the
        sum overstates); None if unknown."""
        return _summed(peak_rss_bytes, self.api_pids())

    def rss_bytes(self) -> int | None:
        """Resident set size now (VmRSS), summed like `peak_rss_bytes`; None if unknown."""
        return _summed(rss_bytes, self.api_pids())

    def cpu_seconds(self) -> float | None:
        """CPU time the server's processes (`api_pids`) have used so far, summed; None if
        unknown. A derivation process replaced meanwhile would take its time with it, so a
        difference of two readings is a figure only when both are known and the second is
        not smaller."""
        values = [cpu_seconds(pid) for pid in self.api_pids()]
        return sum(v for v in values if v is not None) if values and None not in values else None

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
        stop_process(self.process, timeout)
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


def derivation_in_effect(env: Mapping[str, str], workers: int = 1) -> str:
    """Who derives progress in an `lrs serve` with this environment: LRS_DERIVATION as
    `lrs serve` resolves it (lrs.server.serving_settings: `auto` is a derivation process on the
    embedded store of a machine with several cores, without Redis), so the bench knows how many
    processes to wait for and what its RSS figures are the sum of."""
    from lrs.config import Settings
    from lrs.server import serving_settings

    # model_construct: these values only, never the bench's own LRS_ environment or .env file.
    settings = Settings.model_construct(
        derivation=env.get("LRS_DERIVATION") or "auto",
        storage=env.get("LRS_STORAGE") or "auto",
        mongodb_url=env.get("LRS_MONGODB_URL") or None,
        redis_url=env.get("LRS_REDIS_URL") or None,
        workers=workers,
    )
    try:
        return serving_settings(settings).derivation_mode
    except ValueError as exc:
        raise BenchError(str(exc)) from exc


def processes_note(workers: int, derivation: str, figure: str, fields: str = "VmHWM") -> str:
    """`[notes]` text: who derived, and that `figure` (e.g. "api-ingest peak RSS") is a sum
    when the server ran several processes, e.g. `derivation=process api_processes=1
    derivation_processes=1 (api-ingest peak RSS: sum over them, VmHWM each)`."""
    text = f"derivation={derivation} api_processes={workers}"
    if derivation == "process":
        text += " derivation_processes=1"
    if workers > 1 or derivation == "process":
        text += f" ({figure}: sum over them, {fields} each)"
    return text


def status_bytes(status: str, field: str) -> int | None:
    """A memory line (`VmHWM`, `VmRSS`, ...) of a /proc/<pid>/status text, in bytes; None
    when it has none."""
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return None


def vm_hwm_bytes(status: str) -> int | None:
    """The VmHWM line of a /proc/<pid>/status text, in bytes; None when it has none."""
    return status_bytes(status, "VmHWM")


def rss_bytes(pid: int) -> int | None:
    """Resident set size (VmRSS) of a live process now; None when unknown."""
    try:
        return status_bytes(Path(f"/proc/{pid}/status").read_text(), "VmRSS")
    except OSError:
        return None


@dataclass(frozen=True)
class CpuReading:
    """CPU time used so far by the server's processes (None if unknown) and by this process,
    the client (every thread of the bench). Throughput on a shared 2-core machine moves by
    half from one hour to the next; the CPU a statement costs moves much less, so two
    versions compare by it even in runs made an hour apart."""

    server: float | None
    client: float

    @classmethod
    def now(cls, server: Server) -> CpuReading:
        return cls(server.cpu_seconds(), time.process_time())

    def per_statement(self, later: CpuReading, statements: int) -> str:
        """What was used from this reading to `later`, per statement, for a note."""
        if statements <= 0:
            return "no statements"
        client = later.client - self.client
        text = f"client {1000 * client / statements:.3f} ms"
        if self.server is None or later.server is None or later.server < self.server:
            return f"server unknown, {text} ({client:.1f} s)"
        server = later.server - self.server
        return (
            f"server {1000 * server / statements:.3f} ms, {text} "
            f"({server:.1f} s and {client:.1f} s of CPU for {statements} statements)"
        )


def cpu_ticks(stat: str) -> int:
    """User plus system CPU time, in clock ticks, of a /proc/<pid>/stat text (utime and stime,
    the 12th and 13th fields after the command name in parentheses)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float | None:
    """CPU time a live process has used so far, all its threads, in seconds; None when the
    process is gone or /proc is unavailable (not Linux)."""
    try:
        return cpu_ticks(Path(f"/proc/{pid}/stat").read_text()) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def parent_pid(stat: str) -> int:
    """The parent pid of a /proc/<pid>/stat text (the field after the state, which follows
    the command name in parentheses; the name itself may hold spaces and parentheses)."""
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def child_pids(pid: int) -> list[int]:
    """The live children of a process, from /proc (empty when /proc is unavailable)."""
    children = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            if parent_pid((entry / "stat").read_text()) == pid:
                children.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not readable
    return sorted(children)


def _summed(read: Callable[[int], int | None], pids: list[int]) -> int | None:
    values = [read(pid) for pid in pids]
    known = [v for v in values if v is not None]
    return sum(known) if known and len(known) == len(values) else None


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
