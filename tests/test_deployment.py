"""The production deployment files (issue 6): the compose file validates, and the image is
slim and runs as a non-root user. No Docker engine runs here: `docker-compose config` (Debian's
docker-compose 1.29) validates against the Compose schema without one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env = {**os.environ, "LRS_ADMIN_SECRET": "test-secret"}
    return subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), *args],
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
    assert set(result.stdout.split()) == {"mongo", "redis", "api", "worker", "beat", "peer"}
    # The federation peer is optional: it only starts with `--profile peer`.
    rendered = _compose("config").stdout
    peer = rendered.split("\n  peer:\n", 1)[1]
    assert "profiles:\n    - peer" in peer


def test_compose_requires_an_admin_secret() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed")
    env = {k: v for k, v in os.environ.items() if k != "LRS_ADMIN_SECRET"}
    result = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode != 0 and "LRS_ADMIN_SECRET" in result.stderr


def test_compose_wires_mongo_replica_set_and_health() -> None:
    rendered = _compose("config").stdout
    assert "replicaSet=rs0" in rendered
    assert "rs.initiate" in rendered
    assert rendered.count("condition: service_healthy") >= 6


def test_dockerfile_is_slim_and_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "python:3.11-slim" in dockerfile
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
