"""What an organisation's requirements can reach while its environment is built: a
requirement's ``.pth`` file runs at every start of the environment's interpreter (the build's
own steps included), with whatever the build was given. Real uv, a real wheel made here."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from peach_tasks.executors.environments import BUILD_ENV, EnvironmentManager, build_env

# Runs at interpreter start: records the variables it sees in the environment's own folder.
LEAK_PTH = ("import os, sys, json; p = os.path.join(sys.prefix, 'seen-env.json'); "
            "os.path.exists(p) or open(p, 'w').write(json.dumps(dict(os.environ)))\n")


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel holding ``files`` at the root of site-packages."""
    dist = f"{name}-1.0.dist-info"
    contents = {**files,
                f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [record_line(path, text.encode()) for path, text in contents.items()] + [f"{dist}/RECORD,,"]
    contents[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    wheel = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in contents.items():
            archive.writestr(path, text)
    return wheel


def test_the_build_gets_only_what_finding_packages_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEACH_TEST_ADMIN_PASSWORD", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:secret@db/peach")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "61")  # index configuration an operator sets: kept
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    wheel = make_wheel(tmp_path, "leaky", {"leaky.pth": LEAK_PTH})
    env, problem = EnvironmentManager(tmp_path / "state").ensure("acme", (f"leaky @ {wheel.as_uri()}",))
    assert problem is None and env is not None, problem
    seen = json.loads((env.path / "seen-env.json").read_text())
    assert "PEACH_TEST_ADMIN_PASSWORD" not in seen and "DATABASE_URL" not in seen
    assert "hunter2" not in json.dumps(seen)
    assert seen["PIP_DEFAULT_TIMEOUT"] == "61" and seen["LC_TIME"] == "C.UTF-8"
    # Its own HOME, neither the scheduler's nor left behind.
    assert seen["HOME"] != str(Path.home()) and not Path(seen["HOME"]).exists()
    allowed = {*BUILD_ENV, "HOME", "TMPDIR", "VIRTUAL_ENV", "MPLCONFIGDIR"}
    extra = {k for k in seen if k not in allowed and not k.startswith(("LC_", "UV_", "PIP_", "PEACH_TASKS_RUN"))}
    assert not extra, extra


def test_each_organisation_has_its_own_uv_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "shared"))  # one cache for all would be shared
    env = build_env(tmp_path / "home", tmp_path / "state" / "uv-cache" / "acme")
    assert env["UV_CACHE_DIR"] == str(tmp_path / "state" / "uv-cache" / "acme")
    assert env["HOME"] == str(tmp_path / "home")
