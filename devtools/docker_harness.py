"""A real Docker engine for the container tests: find it, stand in for the base image, build.

`.ci/run` starts `dockerd` and exports DOCKER_HOST. Image registries cannot be
reached here, so when `python:3.11-slim` is missing locally this builds a
stand-in under that exact tag: `debootstrap --variant=minbase bookworm`,
`docker import`, then Debian's python3/pip/venv (tests/standin/Dockerfile),
trimmed like the official image (no docs, man pages, translations, apt caches
or bytecode) so that image sizes measured on it are honest. Builds never use
--pull. Without an engine the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = "python:3.11-slim"
IMAGE = "adult-model"
#: A TLS-intercepting proxy's CA certificates (this machine's); passed to builds as PIP_CA, never a layer.
PROXY_CAS = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))


def proxy_ca() -> str:
    return "".join(p.read_text() for p in PROXY_CAS)


def docker_cli() -> str | None:
    """A client that can build with BuildKit secrets: MLCI_DOCKER, Debian's docker.io client, or `docker`."""
    for candidate in (os.environ.get("MLCI_DOCKER"), "/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def docker(*args: str, check: bool = True, timeout: float = 900, buildkit: bool = False,
           **kw) -> subprocess.CompletedProcess:
    """The docker client; builds use the legacy builder unless ``buildkit`` (the README's plain commands
    must work with either)."""
    cli = docker_cli()
    env = {**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"}
    return subprocess.run([cli, *args], capture_output=True, text=True, check=check, timeout=timeout, env=env, **kw)


def engine_or_skip() -> None:
    reason = None
    if docker_cli() is None:
        reason = "no docker client installed"
    else:
        try:
            if docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30).returncode != 0:
                reason = "no Docker engine is reachable (start dockerd and set DOCKER_HOST)"
        except subprocess.TimeoutExpired:
            reason = "the Docker engine does not answer"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true the container tests must run (.ci/run starts dockerd)")
        pytest.skip(reason)


STANDIN = "2"  # tests/standin/Dockerfile's LABEL: an older stand-in is rebuilt


def ensure_base_image() -> None:
    found = docker("image", "inspect", BASE, "--format",
                   '{{index .Config.Labels "org.mlci.standin"}} {{range .Config.Env}}{{.}} {{end}}', check=False)
    if found.returncode == 0 and (found.stdout.split()[:1] == [STANDIN] or " PYTHON_VERSION=" in found.stdout):
        return  # the current stand-in, or the official image (it sets PYTHON_VERSION)
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        pytest.fail(f"{BASE} is missing and cannot be pulled here; building the stand-in needs root and debootstrap")
    with tempfile.TemporaryDirectory(prefix="mlci-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"],
                       check=True, capture_output=True, timeout=900)
        slim_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run([docker_cli(), "import", "-", "mlci-standin/debian-bookworm:minbase"], stdin=tar.stdout,
                       check=True, capture_output=True, timeout=900)
        tar.wait()
    docker("build", "-t", BASE, str(ROOT / "tests" / "standin"))


def slim_rootfs(rootfs: Path) -> None:
    """What debian:bookworm-slim (the official image's base) lacks: the .debs and package lists debootstrap
    leaves behind, documentation but copyright files, man and info pages, translations. The stand-in's
    Dockerfile keeps dpkg from installing them again (/etc/dpkg/dpkg.cfg.d/docker-slim)."""
    def clear(directory: str, keep=lambda p: False) -> None:
        for p in sorted((rootfs / directory).glob("*"), reverse=True):
            if keep(p):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    clear("var/cache/apt/archives", keep=lambda p: p.name in ("partial", "lock"))
    clear("var/lib/apt/lists", keep=lambda p: p.name in ("partial", "lock"))
    for cache in (rootfs / "var/cache/apt").glob("*.bin"):
        cache.unlink()
    for doc in (rootfs / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            clear(str(doc.relative_to(rootfs)), keep=lambda p: p.name == "copyright")
    for directory in ("usr/share/man", "usr/share/info", "usr/share/groff", "usr/share/lintian",
                      "usr/share/linda", "usr/share/locale"):
        if (rootfs / directory).is_dir():
            clear(directory)


def build(target: str | None = None, tag: str = IMAGE, buildkit: bool = False) -> subprocess.CompletedProcess:
    """``docker build -t TAG .`` as the README has it (no --target: the default, the pipeline image), plus
    the proxy's CA as the one extra flag it needs here, and the revision label."""
    args = ["build", "-t", tag, *(["--target", target] if target else [])]
    if PROXY_CAS:
        args += ["--build-arg", f"PIP_CA={proxy_ca()}"]
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    args += ["--build-arg", f"MLCI_REVISION={revision or 'unknown'}"]
    return docker(*args, str(ROOT), buildkit=buildkit)
