"""The service as an operator runs it: the `lrs` command, the embedded store surviving a
restart, bootstrap credentials, and a real `lrs serve` process on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lrs.config import Settings
from lrs.services import build_services
from tests.conftest import basic_auth, statement


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
    env.update({"LRS_DATA_DIR": str(tmp_path / "data"), "LRS_STORAGE": "embedded", **extra})
    return env


def _lrs(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lrs.cli", *args],
        env=_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_credentials_create_prints_key_and_secret_once(tmp_path: Path) -> None:
    """Issue 2: `lrs credentials create --store S --scopes ... --name N` prints key and secret."""
    scopes = "statements/write,all/read"
    result = _lrs(tmp_path, "credentials", "create", "--store", "acme", "--scopes", scopes)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines())
    key, secret = lines["key"].strip(), lines["secret"].strip()
    assert key and secret
    listing = _lrs(tmp_path, "credentials", "list")
    assert key in listing.stdout and secret not in listing.stdout
    assert "acme" in listing.stdout


def test_credentials_create_rejects_unknown_scope(tmp_path: Path) -> None:
    result = _lrs(tmp_path, "credentials", "create", "--store", "s", "--scopes", "everything")
    assert result.returncode != 0
    assert "unknown scope" in result.stderr


async def test_embedded_store_survives_restart(tmp_path: Path) -> None:
    """Issue 2: the embedded store persists to LRS_DATA_DIR and survives a restart."""
    settings = Settings(storage="embedded", data_dir=tmp_path / "data")
    services = build_services(settings)
    await services.start()
    credential, secret = await services.credentials.create("s", ["all"], "x")
    from lrs.xapi.comparison import statements_equivalent

    body = {**statement(), "id": "8d2b5a0e-61d4-4d2e-9a39-2ad6d4c1f001", "stored": "x"}
    await services.statements.insert_batch("s", [body], statements_equivalent)
    await services.close()

    reopened = build_services(settings)
    await reopened.start()
    try:
        assert (await reopened.credentials.lookup(credential.key)) is not None
        found = await reopened.statements.get("s", body["id"], voided=False)
        assert found == body
    finally:
        await reopened.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lrs_serve_on_embedded_store(tmp_path: Path) -> None:
    """The README's run command: `lrs serve` with bootstrap credentials, no MongoDB."""
    port = _free_port()
    env = _env(tmp_path, LRS_ADMIN_KEY="admin", LRS_ADMIN_SECRET="s3cret", LRS_PORT=str(port))
    server = subprocess.Popen(
        [sys.executable, "-m", "lrs.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": basic_auth("admin", "s3cret"), "X-Experience-API-Version": "1.0.3"}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/xapi/about", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        posted = httpx.post(f"{base}/xapi/statements", json=statement(), headers=headers)
        assert posted.status_code == 200
        listed = httpx.get(f"{base}/xapi/statements", headers=headers)
        assert [s["id"] for s in listed.json()["statements"]] == posted.json()
        assert (tmp_path / "data").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_lrs_serve_ends_open_event_streams_at_shutdown(tmp_path: Path) -> None:
    """uvicorn waits for open connections before the application's shutdown: an SSE response,
    which never ends by itself, must be ended when shutdown starts. Otherwise SIGTERM leaves the
    server waiting for the client forever, or (with a graceful-shutdown timeout) cancels the
    response and logs a CancelledError traceback."""
    port = _free_port()
    env = _env(tmp_path, LRS_ADMIN_KEY="admin", LRS_ADMIN_SECRET="s3cret", LRS_PORT=str(port))
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "lrs.cli", "serve"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        headers = {"Authorization": basic_auth("admin", "s3cret")}
        with httpx.stream(
            "GET", f"{base}/progress/stream", headers=headers, timeout=httpx.Timeout(60)
        ) as stream:
            chunks = stream.iter_bytes()
            assert next(chunks).startswith(b": connected")
            server.send_signal(signal.SIGTERM)
            # A hang guard, not a timing requirement: before the fix the server never exits.
            server.wait(timeout=60)
            rest = b"".join(chunks)  # the response ended properly: no protocol error
        assert b"event:" not in rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output = log.read_text()
    # uvicorn re-raises the SIGTERM it handled once it has shut down.
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output and "CancelledError" not in output, output
    assert "Application shutdown complete" in output, output
