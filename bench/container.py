#!/usr/bin/env python3
"""Container figures, side by side in one run (needs a Docker engine: DOCKER_HOST).

    python3 tasks.py bench-container

Prints: the pipeline image's size and what takes the room, the base image's
size, a cold build (no cache) and a rebuild after a code-only change, and the
pipeline's wall time inside the container vs on the host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "devtools"))  # the Docker harness the container tests use too

from docker_harness import BASE, IMAGE, build, docker, ensure_base_image  # noqa: E402


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def size_mb(image: str) -> float:
    return int(docker("image", "inspect", image, "--format", "{{.Size}}").stdout) / 1e6


def main() -> int:
    ensure_base_image()

    def cold_build() -> None:
        docker("builder", "prune", "-af")  # the build cache only: the base image stays
        build()

    cold = timed(cold_build)
    probe = ROOT / "src" / "mlci" / "_bench_probe.py"
    probe.write_text("# touched by bench/container.py\n")
    try:
        rebuild = timed(build)
    finally:
        probe.unlink()
        build()
    top = docker("run", "--rm", "--entrypoint", "sh", IMAGE, "-c",
                 "du -sm /opt/venv/lib/python3*/site-packages/* | sort -rn | head -10").stdout
    inside = timed(lambda: docker("run", "--rm", IMAGE, "run", "--no-track"))
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        (ws / "data" / "raw").mkdir(parents=True)
        shutil.copy(ROOT / "params.yaml", ws)
        shutil.copy(ROOT / "data" / "raw" / "adult.data", ws / "data" / "raw")
        host = timed(lambda: subprocess.run([sys.executable, "-m", "mlci", "run", "--no-track"], cwd=ws,
                                            check=True, capture_output=True,
                                            env={k: v for k, v in os.environ.items() if k != "MLCI_NO_TRACK"}))
    image_mb, base_mb = size_mb(IMAGE), size_mb(BASE)
    print("| figure | value |\n|---|---:|")
    print(f"| pipeline image, uncompressed | {image_mb:,.0f} MB |")
    print(f"| of which the base image ({BASE}) | {base_mb:,.0f} MB |")
    print(f"| of which mlci and its dependencies | {image_mb - base_mb:,.0f} MB |")
    print(f"| cold build (no cache; pip downloads) | {cold:.1f} s |")
    print(f"| rebuild after a code-only change | {rebuild:.1f} s |")
    print(f"| `mlci run --no-track`: in the container / on the host | {inside:.1f} s / {host:.1f} s |")
    print("\nLargest packages in the image (MB):\n```\n" + top.strip() + "\n```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
