"""`lrs serve --workers N` (issues 10 and 13): several API processes on one machine, one
listening socket, one embedded store, no Redis. Every process stores and derives the
statements it receives; an SSE client on any process receives every change (each process
polls the store's change sequence, lrs.progress.live); SIGTERM stops them all cleanly."""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from bench.server import child_pids
from lrs.server import _listeners
from tests.test_progress_e2e import (
    LOOPBACK,
    ChildProcess,
    EventStream,
    _lrs,
    basic,
    child_env,
    free_port,
)

COURSE = "http://example.com/courses/workers"
MODULE = f"{COURSE}/m1"
PAGES = [f"{COURSE}/page{i}" for i in range(3)]
LEARNERS = [f"mailto:learner{i}@example.com" for i in range(8)]


def _statement(learner: str, page: str, minute: int) -> dict[str, Any]:
    return {
        "actor": {"mbox": learner},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
        "object": {"id": page},
        "timestamp": f"2026-01-01T10:{minute:02d}:00Z",
    }


async def test_workers_share_the_store_and_every_stream_sees_every_change(
    tmp_path: Path,
) -> None:
    port = free_port()
    key, secret = "workers", secrets.token_urlsafe(18)
    env = child_env(
        LRS_STORAGE="embedded",
        LRS_DATA_DIR=str(tmp_path / "data"),
        LRS_ADMIN_KEY=key,
        LRS_ADMIN_SECRET=secret,
        LRS_PUBLIC_URL=f"http://{LOOPBACK}:{port}",
    )
    command = _lrs(
        "serve", "--host", LOOPBACK, "--port", str(port), "--workers", "2", "--log-level", "info"
    )
    server = ChildProcess(command, env, tmp_path / "serve.log")
    base_url = f"http://{LOOPBACK}:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{base_url}/xapi/about", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        server.wait_for(answers, "lrs serve --workers 2")
        headers = {"Authorization": basic(key, secret), "X-Experience-API-Version": "1.0.3"}
        definition = {"title": "Workers", "modules": [{"id": MODULE, "content": PAGES}]}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=15) as client:
            answer = await client.put(f"/courses/{quote(COURSE, safe='')}", json=definition)
            assert answer.status_code == 201, answer.text
            # Several streams, each on its own connection: the processes take turns accepting.
            streams = [
                EventStream(
                    httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30),
                    {"course": COURSE},
                )
                for _ in range(4)
            ]
            for stream in streams:
                await stream.__aenter__()
            try:
                # One request per statement, each on a new connection: spread over both.
                for minute, page in enumerate(PAGES):
                    for learner in LEARNERS:
                        async with httpx.AsyncClient(
                            base_url=base_url, headers=headers, timeout=15
                        ) as fresh:
                            sent = await fresh.post(
                                "/xapi/statements", json=_statement(learner, page, minute)
                            )
                            assert sent.status_code == 200, sent.text

                def all_completed(events: list[dict[str, Any]]) -> bool:
                    done = {
                        e["record"]["learner"]
                        for e in events
                        if e["record"]["status"] == "completed"
                    }
                    return done == {f"mbox:{learner}" for learner in LEARNERS}

                for stream in streams:
                    await stream.wait_for(lambda _, s=stream: all_completed(s.events))
            finally:
                for stream in streams:
                    await stream.close()
                    await stream.client.aclose()
            listed = await client.get("/progress", params={"course": COURSE, "limit": "100"})
            records = listed.json()["records"]
            assert {r["status"] for r in records} == {"completed"}
            assert len(records) == len(LEARNERS)
        pids = set(re.findall(r"Started server process \[(\d+)\]", server.text()))
        assert len(pids) == 2, server.text()
    finally:
        server.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.process.wait, 20)
        server.stop()
    assert server.process.returncode == 0, server.text()
    assert "Traceback" not in server.text(), server.text()


def _socket_count(pid: int) -> int:
    """How many sockets a process has open (its listener and the connections it accepted)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += fd.readlink().name.startswith("socket:")
        except OSError:
            continue  # closed meanwhile
    return count


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balancing: Linux")
def test_each_api_process_gets_its_own_listener_on_the_port() -> None:
    listeners = _listeners(LOOPBACK, 0, 3)
    try:
        ports = {listener.getsockname()[1] for listener in listeners}
        assert len(listeners) == 3 and len(ports) == 1
        for listener in listeners:
            assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            assert listener.get_inheritable()
        # Taken by a server that does not share it: refused as it is without --workers.
        with socket.create_server((LOOPBACK, 0)) as taken, pytest.raises(OSError):
            _listeners(LOOPBACK, taken.getsockname()[1], 2)
    finally:
        for listener in listeners:
            listener.close()
    (single,) = _listeners(LOOPBACK, 0, 1)
    single.close()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts sockets through /proc")
async def test_connections_opened_together_are_spread_over_the_api_processes(
    tmp_path: Path,
) -> None:
    """Each API process accepts on its own listener: connections opened together (a client's
    pool) are all answered, and each process holds some of them. A listener that no process
    served would leave its share of the connections unanswered."""
    port = free_port()
    env = child_env(
        LRS_STORAGE="embedded",
        LRS_DATA_DIR=str(tmp_path / "data"),
        LRS_DERIVATION="inprocess",  # the API processes are then the only children
    )
    command = _lrs(
        "serve", "--host", LOOPBACK, "--port", str(port), "--workers", "2", "--log-level", "info"
    )
    server = ChildProcess(command, env, tmp_path / "serve.log")

    def both_serving() -> bool:
        # Both started (their event loops' own sockets opened), not only forked.
        started = server.text().count("Application startup complete")
        return started == 2 and len(child_pids(server.process.pid)) == 2

    try:
        server.wait_for(both_serving, "lrs serve --workers 2")
        children = child_pids(server.process.pid)
        before = {pid: _socket_count(pid) for pid in children}
        # 32 keep-alive connections opened together, each answered once (so accepted) and
        # kept open while the sockets are counted.
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        base_url = f"http://{LOOPBACK}:{port}"
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=15) as client:
            answers = await asyncio.gather(*(client.get("/xapi/about") for _ in range(32)))
            assert {answer.status_code for answer in answers} == {200}
            accepted = {pid: _socket_count(pid) - before[pid] for pid in children}
        assert all(count > 0 for count in accepted.values()), accepted
    finally:
        server.stop()
