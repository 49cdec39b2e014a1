"""The production deployment files (issues 6 and 13): the compose files validate and say what the
stack needs (secrets, health checks, one queue and worker per LRS, a proxy in front of the API
replicas), the image is slim, pinned, built from the lock and runs as a non-root user, and its
entry points run as such a user in a read-only working directory.

No Docker engine runs here: `docker-compose config` (Debian's docker-compose 1.29) validates
against the Compose schema without one, and the entry points run from this checkout with the
image's environment (what CI can check; building the image needs an engine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from lrs.config import Settings
from tests.redis_hygiene import forget_and_check

ROOT = Path(__file__).resolve().parents[1]


SECRETS = {"LRS_ADMIN_SECRET": "test-secret", "LRS_SECRET_KEY": "test-key"}


def _compose(
    *args: str, file: str = "docker-compose.yml", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    if env is None:
        env = {**os.environ, **SECRETS}
    return subprocess.run(
        [binary, "-f", str(ROOT / file), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_compose_file_validates() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_has_the_production_services() -> None:
    result = _compose("--profile", "peer", "config", "--services")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "mongo",
        "redis",
        "api",
        "worker",
        "beat",
        "proxy",
        "peer",
        "peer-worker",
    }
    # The federation peer is optional: it only starts with `--profile peer`.
    rendered = _compose("config").stdout
    peer = rendered.split("\n  peer:\n", 1)[1]
    assert "profiles:\n    - peer" in peer


@pytest.mark.parametrize("file", ["docker-compose.yml", "docker-compose.embedded.yml"])
@pytest.mark.parametrize("secret", ["LRS_ADMIN_SECRET", "LRS_SECRET_KEY"])
def test_compose_requires_the_secrets(secret: str, file: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update({k: v for k, v in SECRETS.items() if k != secret})
    result = _compose("config", "-q", file=file, env=env)
    assert result.returncode != 0 and secret in result.stderr


def test_compose_wires_mongo_replica_set_and_health() -> None:
    rendered = _compose("config").stdout
    assert "replicaSet=rs0" in rendered
    assert "rs.initiate" in rendered
    assert rendered.count("condition: service_healthy") >= 6


def test_dockerfile_is_slim_and_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"python:3\.11\.\d+-slim", dockerfile)
    user_lines = [line for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1].split()[1] not in ("root", "0")


def _wheel(source: Path, out: Path) -> Path:
    """Build the wheel as `pip install .` does (isolated, with the declared build backend)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = out.glob("lrs-*.whl")
    return wheel


def test_installed_package_ships_the_builtin_profiles(tmp_path: Path) -> None:
    """`pip install .` (not editable) then `lrs serve` from anywhere: the built-in profiles,
    kept in profiles/ at the top of the repository, must be inside the installed package."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".*")
    for name in ("lrs", "workers", "profiles"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for path in ROOT.iterdir():
        if path.is_file() and path.name in (
            "pyproject.toml",
            "setup.py",
            "MANIFEST.in",
            "README.md",
        ):
            shutil.copy(path, source / path.name)
    with zipfile.ZipFile(_wheel(source, tmp_path / "dist")) as archive:
        shipped = {
            Path(name).name: archive.read(name)
            for name in archive.namelist()
            if name.startswith("lrs/profiles/")
        }
        archive.extractall(tmp_path / "site")
    builtin = {path.name: path.read_bytes() for path in (ROOT / "profiles").glob("*.json")}
    assert builtin and shipped == builtin
    # The installed package finds them with no LRS_PROFILES_DIR, started outside the checkout.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
    env["PYTHONPATH"] = str(tmp_path / "site")
    check = (
        "import lrs, pathlib; from lrs.progress.profiles import DEFAULT_PROFILE_DIR, load_profiles;"
        "print(pathlib.Path(lrs.__file__).parent); print(DEFAULT_PROFILE_DIR);"
        "print(sorted(load_profiles().by_name))"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    package, directory, names = result.stdout.splitlines()
    assert Path(package) == tmp_path / "site" / "lrs"
    assert Path(directory).is_relative_to(tmp_path / "site")
    assert names == str(sorted(Path(name).stem for name in builtin))


def test_the_image_builds_its_wheel_with_the_profiles() -> None:
    """The image's build stage has what the wheel build needs to ship the profiles, and the
    image relies on them (no LRS_PROFILES_DIR workaround)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    build = dockerfile.split("RUN pip wheel", 1)[0]
    assert "setup.py" in build and "COPY profiles " in build
    assert "LRS_PROFILES_DIR=" not in dockerfile


# --- the stack as shipped (issue 13) ----------------------------------------------------------


def _services(*profiles: str, file: str = "docker-compose.yml") -> dict[str, Any]:
    import yaml

    args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = _compose(*args, "config", file=file)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


LRS_SERVICES = ("api", "worker", "beat", "peer", "peer-worker")


def test_only_the_api_processes_get_the_admin_secret() -> None:
    services = _services("peer")
    for name in LRS_SERVICES:
        environment = services[name]["environment"]
        # Every LRS process decrypts federation peers' secrets with the same key.
        assert environment["LRS_SECRET_KEY"] == SECRETS["LRS_SECRET_KEY"], name
        has_admin = "LRS_ADMIN_SECRET" in environment or "LRS_ADMIN_KEY" in environment
        assert has_admin == (name in ("api", "peer")), name


def test_each_lrs_has_its_own_queue_redis_database_and_worker() -> None:
    services = _services("peer")

    def route(name: str) -> tuple[str, str, str]:
        env = services[name]["environment"]
        return env["LRS_REDIS_URL"], env["LRS_CELERY_QUEUE"], env["LRS_DATABASE"]

    main = {route(name) for name in ("api", "worker", "beat")}
    peer = {route(name) for name in ("peer", "peer-worker")}
    assert len(main) == 1 and len(peer) == 1
    (main_redis, main_queue, main_db), (peer_redis, peer_queue, peer_db) = *main, *peer
    # Tasks, live events and the sweeps' markers of one LRS never meet the other's.
    assert main_redis != peer_redis and main_queue != peer_queue and main_db != peer_db
    assert services["peer-worker"]["command"][:2] == ["lrs", "worker"]
    assert services["peer-worker"]["profiles"] == ["peer"]


def test_every_service_has_a_meaningful_health_check() -> None:
    services = _services("peer")
    for name in (*LRS_SERVICES, "mongo", "redis"):
        assert "healthcheck" in services[name], name
    for name in ("api", "peer"):
        assert "/ready" in " ".join(services[name]["healthcheck"]["test"]), name
    for name in ("worker", "peer-worker"):
        assert "inspect ping" in " ".join(services[name]["healthcheck"]["test"]), name
    assert "LRS_BEAT_SCHEDULE" in " ".join(services["beat"]["healthcheck"]["test"])
    # MongoDB is healthy once a primary exists, not merely once rs.initiate ran.
    assert "isWritablePrimary" in " ".join(services["mongo"]["healthcheck"]["test"])
    # The proxy starts once an API replica is ready; the LRS processes once MongoDB and Redis are.
    assert services["proxy"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_the_api_scales_behind_the_proxy() -> None:
    services = _services()
    # Replicas publish no host port (three could not share one); the proxy publishes it.
    assert "ports" not in services["api"]
    assert services["proxy"]["ports"]
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    volumes = " ".join(str(v) for v in services["proxy"]["volumes"])
    assert "Caddyfile" in volumes and "/etc/caddy/Caddyfile" in volumes
    # Every replica's address (Docker's DNS answers one per container), and SSE unbuffered.
    assert re.search(r"dynamic a api 8000", caddyfile)
    assert "flush_interval -1" in caddyfile
    # Idle upstream connections end on Caddy's side first (keep-alive race, lrs.config).
    keepalive = re.search(r"keepalive (\d+)s", caddyfile)
    assert keepalive and int(keepalive.group(1)) < Settings().keep_alive_seconds


def test_lrs_containers_run_read_only_with_a_writable_tmp() -> None:
    services = _services("peer")
    dockerfile_env = _dockerfile_env()
    assert dockerfile_env["LRS_BEAT_SCHEDULE"].startswith("/tmp/")
    for name in LRS_SERVICES:
        assert services[name]["read_only"] is True, name
        assert "/tmp" in services[name]["tmpfs"], name


def test_no_anonymous_data_volume() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^\s*VOLUME\b", dockerfile, re.MULTILINE)
    # The embedded example keeps its data in a named volume at the image's LRS_DATA_DIR.
    services = _services(file="docker-compose.embedded.yml")
    (volume,) = services["lrs"]["volumes"]
    if isinstance(volume, str):  # docker-compose 1.x renders the short syntax
        source, target = volume.split(":")[:2]
    else:
        source, target = volume["source"], volume["target"]
    assert (source, target) == ("lrs-data", _dockerfile_env()["LRS_DATA_DIR"])
    assert "LRS_MONGODB_URL" not in services["lrs"]["environment"]


def test_images_are_pinned_to_exact_versions() -> None:
    images = [value for value in _dockerfile_args().values() if ":" in value]
    for service in _services("peer").values():
        if "image" in service and "build" not in service:
            images.append(service["image"])
    assert len(images) >= 4
    for image in images:
        tag = image.split("@", 1)[0].rsplit(":", 1)[1]
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image} is not pinned to an exact version"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("FROM "):
            assert line.split()[1].startswith("${"), f"{line}: use the pinned ARG"


def _dockerfile_args() -> dict[str, str]:
    dockerfile = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)", dockerfile, re.MULTILINE))


def _dockerfile_env() -> dict[str, str]:
    """The image's ENV: `ENV A=1 \\` continuation lines joined."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in dockerfile.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line.split()[1:])
    return env


# --- the lock ---------------------------------------------------------------------------------


def _lock() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_image_installs_exactly_the_locked_versions() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--constraint requirements.lock" in dockerfile
    assert "--no-index --find-links /wheels" in dockerfile
    assert "COPY requirements.lock" in dockerfile


def test_the_lock_pins_every_runtime_dependency_within_pyproject() -> None:
    """Every package `lrs` needs at run time (with the extras it asks for, on this platform) is
    pinned, and each pin satisfies the ranges that require it: the lock is a resolution."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins = _lock()
    needed: set[str] = set()
    pending = [(Requirement(r), "") for r in metadata.requires("lrs") or []]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock"
        assert Version(pins[name]) in requirement.specifier, f"{name}=={pins[name]}: {requirement}"
        for wanted_extra in ("", *sorted(requirement.extras)):
            if (name, wanted_extra) in needed:
                continue
            needed.add((name, wanted_extra))
            for sub in metadata.requires(requirement.name) or []:
                pending.append((Requirement(sub), wanted_extra))
    unused = set(pins) - {name for name, _ in needed}
    assert not unused, f"pinned but not needed at run time: {sorted(unused)}"


# --- the image's entry points, as the image runs them ----------------------------------------

NOBODY = 65534


class _Entrypoint:
    """One `lrs` command started as the image starts it: the image's environment (its /tmp and
    /data mapped to private directories, standing in for the container's tmpfs and volume),
    a working directory and HOME it may not write, as an unprivileged user when this runs as
    root."""

    def __init__(self, args: list[str], env: dict[str, str], base: Path, user: int | None):
        self.log = base / f"{args[0]}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lrs.cli", *args],
                env=env,
                cwd=base / "app",
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=user,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)
        return self.process.returncode


def _unprivileged(env: dict[str, str], base: Path, redis_url: str) -> int | None:
    """The uid to run as: `nobody` when this runs as root and nobody can use this checkout and
    Redis, else this user (not root on a developer machine; either way the checks below see
    whether anything is written to the working directory or HOME)."""
    if os.geteuid() != 0:
        return None
    probe = f"import lrs, redis; redis.Redis.from_url({redis_url!r}).ping()"
    try:
        result = subprocess.run(
            [sys.executable, "-c", probe],
            env=env,
            cwd=base / "app",
            user=NOBODY,
            group=NOBODY,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return NOBODY if result.returncode == 0 else None


def _wait(what: str, entry: _Entrypoint, ready: Any, seconds: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not ready():
        if entry.process.poll() is not None:
            pytest.fail(f"{what} exited ({entry.process.returncode}):\n{entry.text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready in {seconds:.0f} s:\n{entry.text()}")
        time.sleep(0.2)


def test_entry_points_run_unprivileged_in_a_read_only_working_directory(redis_url: str) -> None:
    import secrets
    import socket
    import tempfile
    import time

    import httpx

    base = Path(tempfile.mkdtemp(prefix="lrs-image-"))
    queue = f"lrs-image-test-{secrets.token_hex(4)}"
    entries: list[_Entrypoint] = []
    try:
        base.chmod(0o755)
        for name in ("app", "home"):
            (base / name).mkdir()
            (base / name).chmod(0o555)  # root's, read-only: the image's WORKDIR and a HOME
        container_tmp, volume = base / "tmp", base / "data"
        for directory in (container_tmp, volume):
            directory.mkdir()
            directory.chmod(0o1777)
        image_env = {
            name: value.replace("/tmp/", f"{container_tmp}/", 1)
            if value.startswith("/tmp/")
            else str(volume)
            if value == "/data"
            else value
            for name, value in _dockerfile_env().items()
        }
        assert image_env["LRS_BEAT_SCHEDULE"].startswith(str(container_tmp))
        env = {k: v for k, v in os.environ.items() if not k.startswith("LRS_")}
        env.update(image_env)
        env.update(
            HOME=str(base / "home"),
            TMPDIR=str(container_tmp),
            PYTHONDONTWRITEBYTECODE="1",
            LRS_REDIS_URL=redis_url,
            LRS_CELERY_QUEUE=queue,
            LRS_ADMIN_KEY="image-admin",
            LRS_ADMIN_SECRET="image-secret",
            LRS_SECRET_KEY="image-key",
        )
        user = _unprivileged(env, base, redis_url)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]

        api = _Entrypoint(["serve", "--host", "127.0.0.1", "--port", str(port)], env, base, user)
        entries.append(api)

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait("lrs serve", api, answers)
        worker = _Entrypoint(
            [
                "worker",
                "--pool",
                "solo",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-n",
                f"{queue}@%h",
            ],
            env,
            base,
            user,
        )
        entries.append(worker)
        _wait("lrs worker", worker, lambda: " ready." in worker.text())
        beat = _Entrypoint(["beat"], env, base, user)
        entries.append(beat)
        schedule = Path(env["LRS_BEAT_SCHEDULE"])
        _wait("lrs beat", beat, lambda: any(schedule.parent.glob(schedule.name + "*")))
        # The API is ready once the worker's heartbeat is in: the whole stack works.
        _wait(
            "/ready",
            api,
            lambda: httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200,
        )
        time.sleep(3)  # they stay up (a crash-looping beat exits within a second)
        for entry in entries:
            assert entry.process.poll() is None, entry.text()
        assert "Permission denied" not in beat.text() + worker.text() + api.text()
        # Nothing was written where the image gives no write access.
        assert not list((base / "app").iterdir()) and not list((base / "home").iterdir())
    finally:
        for entry in reversed(entries):
            entry.stop()
        shutil.rmtree(base, ignore_errors=True)
        forget_and_check(redis_url, queues=[queue], nodes=[f"{queue}@"])
