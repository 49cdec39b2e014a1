"""Federation soak: forward many statements to a peer that fails at random and goes down for a
while, then check that the peer holds exactly the statements the sender holds.

    python -m bench.federation_soak                  # 50,000 statements
    python -m bench.federation_soak --statements 5000 --down 10

Two instances of this LRS run in this process, each a real uvicorn server on a loopback port
with its own store (lrs.federation.loopback): the sender, whose in-process federation loop
forwards to the peer, and the peer, wrapped in a middleware that fails `--failure-rate` of the
requests at random (500, 502, 503 or 429 with Retry-After: 1; half of them *after* the peer
stored the statements, so the sender's retry is a redelivery) and that is stopped for `--down`
seconds once half of the statements were sent. The client POSTs batches to the sender while
it forwards. Figures are printed and written to bench/results/federation-soak-<backend>.json;
the exact id equality is asserted (exit status 1 when it fails).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from lrs.config import Settings
from lrs.federation.loopback import LoopbackLRS, basic_auth

LEARNERS = 500


@dataclass(frozen=True)
class SoakConfig:
    statements: int = 50_000
    batch_size: int = 100  # statements per client POST to the sender
    concurrency: int = 4  # client requests in flight
    failure_rate: float = 0.2
    down: float = 30.0  # seconds the peer is stopped, starting half-way through the sends
    backend: str = "embedded"  # the sender's and the peer's store
    forward_batch_size: int = 100
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    max_attempts: int = 40
    seed: int = 7
    timeout: float = 3600.0  # give up (and fail) when not drained after this long


def _statement(rng: random.Random, n: int) -> dict[str, Any]:
    learner = rng.randrange(LEARNERS)
    return {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "actor": {"objectType": "Agent", "mbox": f"mailto:learner{learner}@example.com"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/experienced"},
        "object": {"objectType": "Activity", "id": f"http://example.com/soak/{n % 997}"},
        "timestamp": "2026-01-01T00:00:00Z",
    }


def _settings(root: Path, name: str, config: SoakConfig, **extra: Any) -> Settings:
    return Settings(
        storage=config.backend,
        data_dir=root / name,
        database=name,
        redis_url=None,
        auth_cache_seconds=3600.0,
        **extra,
    )


async def _ingest(
    config: SoakConfig, sender: LoopbackLRS, auth: str, half_way: asyncio.Event
) -> tuple[list[str], float]:
    rng = random.Random(config.seed)
    batches = [
        [
            _statement(rng, start + i)
            for i in range(min(config.batch_size, config.statements - start))
        ]
        for start in range(0, config.statements, config.batch_size)
    ]
    ids: list[str] = []
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    started = time.monotonic()
    headers = {"Authorization": auth, "X-Experience-API-Version": "1.0.3"}

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            response = await client.post("/xapi/statements", json=batch, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"the sender refused a batch: {response.status_code}")
            ids.extend(response.json())
            if len(ids) >= config.statements // 2:
                half_way.set()

    async with httpx.AsyncClient(base_url=sender.base_url, timeout=120) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(config.concurrency)))
    half_way.set()
    return ids, time.monotonic() - started


async def _outage(config: SoakConfig, peer: LoopbackLRS, half_way: asyncio.Event) -> dict:
    await half_way.wait()
    stopped = time.monotonic()
    await asyncio.to_thread(peer.stop)
    await asyncio.sleep(config.down)
    await asyncio.to_thread(peer.start)
    return {"stopped_at": stopped, "restarted_at": time.monotonic()}


async def _lag(client: httpx.AsyncClient, destination_id: str) -> dict[str, Any]:
    response = await client.get(f"/admin/destinations/{destination_id}")
    response.raise_for_status()
    return response.json()["lag"]


async def soak(config: SoakConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lrs-soak-") as tmp:
        root = Path(tmp)
        peer = LoopbackLRS(_settings(root, "peer", config), seed=config.seed)
        sender = LoopbackLRS(
            _settings(
                root,
                "sender",
                config,
                federation_interval=0.2,
                forward_batch_size=config.forward_batch_size,
                forward_backoff_base=config.backoff_base,
                forward_backoff_max=config.backoff_max,
                forward_max_attempts=config.max_attempts,
                outbox_grace=5.0,
            )
        )
        try:
            peer.start()
            sender.start()
            return await _run(config, sender, peer)
        finally:
            sender.close()
            peer.close()


async def _run(config: SoakConfig, sender: LoopbackLRS, peer: LoopbackLRS) -> dict[str, Any]:
    peer_key, peer_secret = peer.credential(["statements/write", "statements/read"])
    auth = basic_auth(*sender.credential(["statements/write", "admin"]))
    chaos = peer.chaos
    chaos.failure_rate = config.failure_rate
    chaos.retry_after = "1"

    async with httpx.AsyncClient(
        base_url=sender.base_url, headers={"Authorization": auth}, timeout=60
    ) as admin:
        response = await admin.post(
            "/admin/destinations",
            json={
                "name": "soak peer",
                "endpoint": peer.endpoint,
                "username": peer_key,
                "password": peer_secret,
            },
        )
        response.raise_for_status()
        destination_id = response.json()["id"]

        started = time.monotonic()
        half_way = asyncio.Event()
        outage = asyncio.create_task(_outage(config, peer, half_way))
        ids, ingest_seconds = await _ingest(config, sender, auth, half_way)
        ingested = time.monotonic()
        print(
            f"sent {len(ids)} statements in {ingest_seconds:.1f}s "
            f"({len(ids) / ingest_seconds:.0f}/s); waiting for the peer",
            flush=True,
        )
        window = await outage
        last_report = 0.0
        while True:
            lag = await _lag(admin, destination_id)
            unfanned = sender.run(sender.services.statements.outbox.pending("forward", limit=1))
            if not unfanned and lag["pending"] == 0:
                break
            if time.monotonic() - started > config.timeout:
                raise TimeoutError(f"not drained after {config.timeout:.0f}s: {lag}")
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                print(
                    f"  {time.monotonic() - started:6.0f}s pending {lag['pending']:6d} "
                    f"delivered {lag['delivered']:6d} retries {lag['retries']:6d} "
                    f"dead {lag['dead']}",
                    flush=True,
                )
            await asyncio.sleep(0.5)
        drained = time.monotonic()
        lag = await _lag(admin, destination_id)

    sender_ids = sender.statement_ids()
    peer_ids = peer.statement_ids()
    peer_count = peer.run(peer.services.database["statements"].count({"store": "default"}))
    return {
        "config": asdict(config),
        "figures": {
            "statements": len(ids),
            "ingest_seconds": round(ingest_seconds, 1),
            "ingest_rate": round(len(ids) / ingest_seconds, 1),
            "total_seconds": round(drained - started, 1),
            "drain_after_ingest_seconds": round(drained - ingested, 1),
            "drain_after_peer_back_seconds": round(drained - window["restarted_at"], 1),
            "peer_down_seconds": round(window["restarted_at"] - window["stopped_at"], 1),
            "peer_requests": dict(chaos.requests),
            "injected_failures": dict(chaos.failures),
            "delivered": lag["delivered"],
            "statement_retries": lag["retries"],
            "dead_letters": lag["dead"],
            "last_error": (lag["last_error"] or {}).get("message"),
        },
        "verification": {
            "sender_statements": len(sender_ids),
            "peer_statements": peer_count,
            "missing_on_peer": len(sender_ids - peer_ids),
            "extra_on_peer": len(peer_ids - sender_ids),
            "exact": sender_ids == peer_ids and peer_count == len(sender_ids) == len(ids),
        },
    }


def _parser() -> argparse.ArgumentParser:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(prog="python -m bench.federation_soak", description=__doc__)
    parser.add_argument("--statements", type=int, default=defaults.statements)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--failure-rate", type=float, default=defaults.failure_rate)
    parser.add_argument(
        "--down", type=float, default=defaults.down, help="seconds the peer is down"
    )
    parser.add_argument("--backend", choices=["embedded", "memory"], default=defaults.backend)
    parser.add_argument("--forward-batch-size", type=int, default=defaults.forward_batch_size)
    parser.add_argument("--backoff-base", type=float, default=defaults.backoff_base)
    parser.add_argument("--backoff-max", type=float, default=defaults.backoff_max)
    parser.add_argument("--max-attempts", type=int, default=defaults.max_attempts)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = SoakConfig(**{k: v for k, v in vars(args).items()})
    result = asyncio.run(soak(config))
    from bench.report import write_json

    path = write_json("federation-soak", config.backend, result)
    figures, check = result["figures"], result["verification"]
    print()
    for name, value in {**figures, **check}.items():
        print(f"{name:32} {value}")
    print(f"\nresults: {path}")
    if not check["exact"]:
        print("FAILED: the peer does not hold exactly the sender's statements", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
