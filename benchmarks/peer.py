"""The peer: Vercel's ``resumable-stream`` on a local Redis, run by ``../shared/peers/bench_vercel.mjs``.

The first run copies the peer's folder to ``benchmarks/.peer/`` (``shared/``
may be read-only) and runs ``npm ci`` there; ``redis-server`` and Node come
from Debian (installed with apt-get when missing, as the test scripts do).
Each scenario runs on a fresh ``redis-server`` on a free port.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "peers"
WORK = ROOT / "benchmarks" / ".peer"


def available() -> str | None:
    """Why the peer cannot run here, or None."""
    if not (SOURCE / "bench_vercel.mjs").exists():
        return f"{SOURCE} is missing"
    for program, package in (("node", "nodejs"), ("npm", "npm"), ("redis-server", "redis-server")):
        if shutil.which(program) is None:
            subprocess.run([str(ROOT / ".ci" / "apt-install"), package], check=True)
    return None


def _prepare() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    for name in ("bench_vercel.mjs", "package.json", "package-lock.json"):
        shutil.copy2(SOURCE / name, WORK / name)
    if not (WORK / "node_modules" / "resumable-stream").exists():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=WORK, check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(scenario: str, *options: str, timeout: float = 600) -> dict[str, Any]:
    """Run one peer scenario (``lag``, ``throughput``, ``concurrency-N``, ``replay``); its JSON result."""
    _prepare()
    port = _free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.json"
            subprocess.run(
                ["node", "bench_vercel.mjs", "--redis-url", f"redis://127.0.0.1:{port}", "--scenario", scenario,
                 "--json-out", str(out), "--results-dir", tmp, *options],
                cwd=WORK, check=True, timeout=timeout, stdout=subprocess.DEVNULL,
            )
            result: dict[str, Any] = json.loads(out.read_text())
            return result
    finally:
        redis.terminate()
        redis.wait(timeout=10)
