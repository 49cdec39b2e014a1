"""`lrs serve --workers N` (issues 10 and 13): several API processes on one machine, one
listening socket, one embedded store, no Redis. Every process stores and derives the
statements it receives; an SSE client on any process receives every change (each process
polls the store's change sequence, lrs.progress.live); SIGTERM stops them all cleanly."""

from __future__ import annotations

import asyncio
import re
import secrets
import signal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

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
