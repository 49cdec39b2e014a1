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
    sharing one listening socket and, with LRS_DERIVATION=process, a derivation process."""
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
    """Several API processes on one machine: the socket is bound here, once, then each forked
    process serves it (the kernel spreads the connections), with the same settings and the same
    store; with `LRS_DERIVATION=process`, also the derivation process (lrs.derivation_process).
    A child that dies is replaced; SIGTERM or SIGINT stops them all, each API process ending
    its SSE streams first. Forked before any event loop, thread or database connection exists."""
    listener = socket.create_server((host, port), reuse_port=False, backlog=2048)
    listener.set_inheritable(True)
    children: dict[int, int] = {}  # pid -> worker number (DERIVER: the derivation process)
    stopping = False

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            try:
                if number == DERIVER:
                    listener.close()
                    derivation_process.run(settings)
                else:
                    _serve_here(settings, host, port, log_level, sockets=[listener], **options)
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
    listener.close()
