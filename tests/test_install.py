"""The README's install: ``make dist``, then the wheel (not editable) in a fresh virtualenv, used from elsewhere.

The README's install block runs as written, with a fresh virtualenv's ``pip``
first on ``PATH``. From a directory outside the checkout (so nothing can be
imported from it), that virtualenv then runs the README's plain script and
starts the local S2 server: a file missing from the wheel fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import requests

import resumable_stream

from .chat_helpers import ROOT, Command, app_env
from .readme_blocks import block

INSTALL = ("README.md", "Install")


def test_the_wheel_installs_and_works_outside_the_checkout(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = block(*INSTALL)
    assert f"resumable_stream_s2-{resumable_stream.__version__}-py3-none-any.whl" in install  # the version is current
    env = app_env(PATH=f"{venv / 'bin'}:{app_env()['PATH']}", PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run(["bash", "-ec", install], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert sorted(p.suffix for p in (ROOT / "dist").iterdir()) == [".gz", ".whl"]  # the sdist and the wheel
    python = str(venv / "bin" / "python")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    where = subprocess.run(
        [python, "-c", "import resumable_stream, resumable_stream.flask as f, importlib.resources as r; "
         "print(resumable_stream.__file__); print(r.files('resumable_stream').joinpath('py.typed').is_file())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    location, typed = where.stdout.split()
    assert Path(location).is_relative_to(venv) and typed == "True"  # the installed copy, with its py.typed

    (elsewhere / "script.py").write_text(block("README.md", "A plain script"))
    script = subprocess.run([python, "script.py"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert script.stdout.splitlines() == ["the quick brown fox jumps over the lazy dog ", "StreamState.COMPLETED"]
    assert "S2 is not configured" not in script.stderr  # a library stays silent until the app configures logging

    server = Command([python, "-m", "resumable_stream.testing.server", "--port", "0"], env, cwd=elsewhere)
    try:
        url = server.await_output(lambda text: re.search(r"READY (http://\S+)", text)).group(1)
        basins = requests.get(f"{url}/v1/basins", headers={"Authorization": "Bearer local"}, timeout=10)
        assert basins.status_code == 200 and "basins" in basins.json()
    finally:
        assert server.stop() == 0


def test_the_make_commands_editable_install_prints_no_notice(tmp_path: Path) -> None:
    """``make run`` and ``make test`` install the checkout editable: quietly, and importable from anywhere."""
    editable = re.search(r"^EDITABLE := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert editable is not None
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--no-deps", "--no-build-isolation", *editable.group(1).split(),
           str(ROOT)]
    env = app_env(PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "setuptools>=69"], env=env, check=True, timeout=300)
    done = subprocess.run(pip, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "editable install" not in (done.stdout + done.stderr).lower()  # setuptools' notice, pip's -q or not
    find = "import importlib.util as u; print(u.find_spec('resumable_stream').origin)"  # (no dependencies here)
    where = subprocess.run([str(venv / "bin" / "python"), "-c", find], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=60)
    assert Path(where.stdout.strip()) == ROOT / "resumable_stream" / "__init__.py", where.stderr
