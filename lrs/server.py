"""`lrs serve`: uvicorn, ending the live event streams as soon as shutdown starts.

uvicorn shuts down in this order: stop accepting connections, wait for the open ones to finish
their responses, then run the application's shutdown (lifespan). A Server-Sent Events response
never finishes by itself, so without help the wait lasts until the client goes away: SIGTERM
leaves the server hanging, or, with a graceful-shutdown timeout, uvicorn cancels the response
and logs a CancelledError traceback. Here the streams are told to end first, so they finish
cleanly (clients reconnect, with Last-Event-ID, to whichever instance serves next).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import uvicorn
from fastapi import FastAPI

from lrs import derivation_process
from lrs.app import create_app
from lrs.config import Settings

log = logging.getLogger("lrs.server")
DERIVER = -1  # the derivation process's number among the supervised children


class Server(uvicorn.Server):
    """uvicorn's server for the LRS application: ends its SSE streams when shutdown starts."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.apps: list[FastAPI] = []

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for app in self.apps:
            app.state.services.bus.end_streams()
        await super().shutdown(sockets)


def serve(settings: Settings, host: str, port: int, log_level: str, **options: Any) -> None:
    """Serve on (host, port) with `settings` as `serving_settings` resolved them: in this
    process, or under a supervisor (`_supervise`) with `settings.workers` > 1 API processes
    (each on a listening socket of its own, see `_listeners`) and, with LRS_DERIVATION=process,
    a derivation process."""
    # A request allocates thousands of short-lived objects (JSON, documents, index keys) that
    # reference counting frees; the default threshold (700) runs the cycle collector every few
    # hundred of them, about a tenth of the CPU under load for no garbage found. Measured with
    # in-process ingestion of 20,000 statements: about 10% more statements/s. Not much higher:
    # each young-generation collection then walks that many objects, and at 100,000 every one
    # stopped the process for 25-40 ms (every second or two under batch ingestion), at 20,000
    # for 6-10 ms, at the same throughput.
    gc.set_threshold(20_000, 50, 100)
    if settings.workers > 1 or settings.derivation_mode == "process":
        _supervise(settings, host, port, log_level, **options)
    else:
        _serve_here(settings, host, port, log_level, **options)


def serving_settings(settings: Settings, cores: int | None = None) -> Settings:
    """What `lrs serve` runs: LRS_DERIVATION=auto without Redis, on the embedded store of a
    machine with several cores, is a derivation process beside the API processes (each has a
    core: writes about twice as fast as deriving in the API process, events a polling interval
    later); elsewhere auto stays as `Settings.derivation_mode` says. A derivation process needs
    a store that processes share: not the in-memory one."""
    if settings.derivation == "process" and settings.storage_kind == "memory":
        raise ValueError("LRS_DERIVATION=process needs a store processes share, not memory")
    if cores is None:
        usable = getattr(os, "sched_getaffinity", None)  # the cores this process may run on
        cores = len(usable(0)) if usable else (os.cpu_count() or 1)
    if (
        settings.derivation == "auto"
        and not settings.redis_url
        and settings.storage_kind == "embedded"
        and cores >= 2
        and hasattr(os, "fork")  # the supervisor forks (not on Windows)
    ):
        return settings.model_copy(update={"derivation": "process"})
    return settings


def _serve_here(
    settings: Settings,
    host: str,
    port: int,
    log_level: str,
    sockets: list[socket.socket] | None = None,
    **options: Any,
) -> None:
    server: Server

    def make_app() -> FastAPI:
        # Built by uvicorn inside its event loop, as with `lrs.app:create_app --factory`.
        app = create_app(settings)
        server.apps.append(app)
        return app

    config = uvicorn.Config(
        make_app,
        factory=True,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,
        timeout_keep_alive=settings.keep_alive_seconds,
        **options,
    )
    server = Server(config)
    server.run(sockets=sockets)


def _supervise(settings: Settings, host: str, port: int, log_level: str, **options: Any) -> None:
    """Several API processes on one machine: the port is bound here (`_listeners`), then each
    forked process serves its listening socket, with the same settings and the same store;
    with `LRS_DERIVATION=process`, also the derivation process (lrs.derivation_process).
    A child that dies is replaced; SIGTERM or SIGINT stops them all, each API process ending
    its SSE streams first. Forked before any event loop, thread or database connection exists."""
    listeners = _listeners(host, port, settings.workers)
    children: dict[int, int] = {}  # pid -> worker number (DERIVER: the derivation process)
    stopping = False

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                own = None if number == DERIVER else listeners[number % len(listeners)]
                for listener in listeners:
                    if listener is not own:
                        listener.close()
                if own is None:
                    derivation_process.run(settings)
                else:
                    _serve_here(settings, host, port, log_level, sockets=[own], **options)
            finally:
                os._exit(0)
        children[pid] = number

    def stop(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deriving = settings.derivation_mode == "process"
    log.info(
        "serving on %s:%d with %d API processes%s",
        host,
        port,
        settings.workers,
        " and a derivation process" if deriving else "",
    )
    if deriving:
        start(DERIVER)
    for number in range(settings.workers):
        start(number)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        number = children.pop(pid, None)
        if number is not None and not stopping:
            what = "the derivation process" if number == DERIVER else f"worker {number}"
            log.warning("%s (pid %d) ended (%s); starting another", what, pid, status)
            time.sleep(0.5)
            start(number)
    for listener in listeners:
        listener.close()


def _listeners(host: str, port: int, workers: int) -> list[socket.socket]:
    """The listening sockets of `workers` API processes, bound here before they are forked.

    On Linux, one socket per process, all bound to the port with SO_REUSEPORT: the kernel
    spreads new connections evenly among them. One socket shared by all would not: each
    process's event loop accepts every connection pending when it wakes, so a client that
    opens its pool of connections at once (the bench's 8 keep-alive connections) had them all
    served by one process while the others idled. A socket stays open here too, so the
    connections queued on it wait for the process that replaces a dead one.

    SO_REUSEPORT would also let another server of the same user join the port unnoticed, so
    the port is first bound without it: taken, it fails as one process does. Elsewhere (no
    load balancing of SO_REUSEPORT), one shared socket."""
    if workers < 2 or not sys.platform.startswith("linux"):
        listener = socket.create_server((host, port), backlog=2048)
        listener.set_inheritable(True)
        return [listener]
    with socket.create_server((host, port)) as probe:  # EADDRINUSE when taken
        port = probe.getsockname()[1]  # the one chosen, for port 0
    listeners: list[socket.socket] = []
    for _ in range(workers):
        listener = socket.create_server((host, port), reuse_port=True, backlog=2048)
        listener.set_inheritable(True)
        listeners.append(listener)
    return listeners
