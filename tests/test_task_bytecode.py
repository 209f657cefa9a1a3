"""The task process's own files compiled once per environment (executors/bytecode.py): a real
uv environment holds them, compiled by its own interpreter, and a run uses a record only
while it is of the very file it runs."""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Repo,
    py_task,
    require_service,
    sandbox_missing,
    task_yaml,
    write_settings,
)
from test_python_executor import Run

from peach_tasks.executors.bytecode import (
    BOOTSTRAP,
    CACHE_DIR,
    DIGEST_FILE,
    FILES,
    sources_digest,
)
from peach_tasks.executors.environments import EnvironmentManager
from peach_tasks.model import RunStatus

TELLS = """
import builtins
def main():
    display("shown")  # loads displays.py beside bootstrap.py
    return [getattr(builtins, "peach_from_record", None), getattr(builtins, "peach_displays_from_record", None)]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    built, problem = EnvironmentManager(tmp_path_factory.mktemp("bytecode") / "state").ensure("acme", ())
    assert problem is None and built is not None, problem
    return built


def records(env: Any) -> dict[str, tuple]:
    folder = env.path / CACHE_DIR
    return {path.name: marshal.loads(path.read_bytes()) for path in folder.glob("*.bin")}


def test_an_environment_holds_the_task_files_compiled_by_its_own_interpreter(env: Any) -> None:
    version = subprocess.run([str(env.python), "-I", "-c", "import sys; print(sys.version, end='')"],
                             capture_output=True, text=True, check=True).stdout
    found = records(env)
    assert (env.path / DIGEST_FILE).read_text() == sources_digest()
    assert sorted(found) == sorted(f"{path.name}.bin" for path in FILES)
    for path in FILES:
        recorded_version, recorded_path, source, code = found[f"{path.name}.bin"]
        assert (recorded_version, recorded_path, source) == (version, str(path), path.read_bytes())
        assert code.co_filename == str(path)


def with_marker(path: Path, name: str) -> bytes:
    """``path``'s source with one more line after its __future__ import: it marks builtins."""
    source = path.read_bytes()
    head, sep, rest = source.partition(b"from __future__ import annotations\n")
    assert sep, path
    return head + sep + f"import builtins; builtins.{name} = True\n".encode() + rest


def write_record(env: Any, path: Path, source: bytes, code_source: bytes) -> None:
    """A record for ``path`` claiming ``source`` but holding the code of ``code_source``."""
    version = subprocess.run([str(env.python), "-I", "-c", "import sys; print(sys.version, end='')"],
                             capture_output=True, text=True, check=True).stdout
    script = ("import marshal, sys\n"
              "version, path, source, code_source, out = sys.argv[1:]\n"
              "record = (version, path, open(source, 'rb').read(),\n"
              "          compile(open(code_source, 'rb').read(), path, 'exec', dont_inherit=True))\n"
              "open(out, 'wb').write(marshal.dumps(record))\n")
    folder = env.path / CACHE_DIR
    claimed, real = folder / f".claimed-{path.name}", folder / f".code-{path.name}"
    claimed.write_bytes(source)
    real.write_bytes(code_source)
    try:
        subprocess.run([str(env.python), "-I", "-c", script, version, str(path), str(claimed), str(real),
                        str(folder / f"{path.name}.bin")], check=True)
    finally:
        claimed.unlink()
        real.unlink()


def run_in(env: Any, folder: Path) -> Run:
    folder.mkdir()
    return Run(folder, TELLS, interpreter=env.python, timeout=60.0)


def test_a_run_uses_a_record_of_the_same_source_and_compiles_a_changed_one(env: Any, tmp_path: Path) -> None:
    displays = BOOTSTRAP.with_name("displays.py")
    saved = {path.name: (env.path / CACHE_DIR / f"{path.name}.bin").read_bytes() for path in (BOOTSTRAP, displays)}
    try:
        plain = run_in(env, tmp_path / "plain")  # the records as built: the same code, no marker
        assert plain.outcome.status is RunStatus.SUCCESS, plain.log
        assert plain.outcome.result == [None, None]
        assert [o.data for o in plain.outcome.outputs] == [b"'shown'"]

        # Records of today's sources, holding marked code: they are what runs.
        write_record(env, BOOTSTRAP, BOOTSTRAP.read_bytes(), with_marker(BOOTSTRAP, "peach_from_record"))
        write_record(env, displays, displays.read_bytes(), with_marker(displays, "peach_displays_from_record"))
        used = run_in(env, tmp_path / "used")
        assert used.outcome.status is RunStatus.SUCCESS, used.log
        assert used.outcome.result == [True, True]

        # Records of a source one byte away from the file's (a scheduler upgraded since): not used.
        write_record(env, BOOTSTRAP, BOOTSTRAP.read_bytes() + b"\n", with_marker(BOOTSTRAP, "peach_from_record"))
        write_record(env, displays, displays.read_bytes() + b" ", with_marker(displays, "peach_displays_from_record"))
        stale = run_in(env, tmp_path / "stale")
        assert stale.outcome.status is RunStatus.SUCCESS, stale.log
        assert stale.outcome.result == [None, None]
        assert [o.data for o in stale.outcome.outputs] == [b"'shown'"]

        # Unreadable records, or none at all: the files are compiled, as before.
        for name in saved:
            (env.path / CACHE_DIR / f"{name}.bin").write_bytes(b"not a record")
        garbled = run_in(env, tmp_path / "garbled")
        assert garbled.outcome.status is RunStatus.SUCCESS and garbled.outcome.result == [None, None], garbled.log
        for name in saved:
            (env.path / CACHE_DIR / f"{name}.bin").unlink()
        missing = run_in(env, tmp_path / "missing")
        assert missing.outcome.status is RunStatus.SUCCESS and missing.outcome.result == [None, None], missing.log
    finally:
        for name, data in saved.items():
            (env.path / CACHE_DIR / f"{name}.bin").write_bytes(data)


def test_a_failing_task_is_reported_the_same_from_a_record(env: Any, tmp_path: Path) -> None:
    """bootstrap.py's own frames are left out of the traceback also when it runs from its record."""
    run = Run(tmp_path, "def main():\n    raise KeyError('gone')\n", interpreter=env.python, timeout=60.0)
    assert run.outcome.status is RunStatus.FAILURE and run.outcome.error == "KeyError: 'gone'"
    traceback = "\n".join(run.log)
    assert "in main" in traceback and "bootstrap.py" not in traceback
    assert os.path.exists(env.path / CACHE_DIR / "bootstrap.py.bin")


SANDBOXED = """
import builtins, os, sys
def main():
    record = os.path.join(sys.prefix, "share", "peach-tasks", "bytecode", "bootstrap.py.bin")
    try:
        open(record, "ab").close()
        writable = True
    except OSError:
        writable = False
    return {"readable": os.access(record, os.R_OK), "writable": writable,
            "from_record": getattr(builtins, "peach_from_record", None)}
"""


def test_a_sandboxed_run_uses_its_environments_record_and_cannot_change_it(tmp_path: Path,
                                                                           open_scheduler: Any) -> None:
    require_service(sandbox_missing())
    repo = Repo(tmp_path / "algos")
    repo.notebook("tells.ipynb", SANDBOXED)
    repo.write("peach.yaml", task_yaml("acme", {"tells": py_task("tells.ipynb", "main")}))
    repo.commit("tells")
    scheduler, store = open_scheduler(write_settings(tmp_path, [{"url": str(repo.path), "branch": "master"}]))
    scheduler.run_once(orgs=["acme"])  # builds the environment, with its records
    [env] = [e for e in (tmp_path / "state" / "envs" / "acme" / "base").iterdir() if not e.is_symlink()]
    write_record(type("Env", (), {"path": env, "python": env / "bin" / "python"})(), BOOTSTRAP,
                 BOOTSTRAP.read_bytes(), with_marker(BOOTSTRAP, "peach_from_record"))
    scheduler.run_once(orgs=["acme"])
    first, second = reversed(store.runs("acme", "tells", limit=5))
    assert first["status"] == second["status"] == "SUCCESS", store.log(second["id"])
    assert first["peak_memory_bytes"] is not None  # in its sandbox and cgroup
    assert first["result"] == {"readable": True, "writable": False, "from_record": None}
    assert second["result"] == {"readable": True, "writable": False, "from_record": True}


def test_an_environment_built_before_gets_records_of_this_schedulers_files(tmp_path: Path) -> None:
    """Built by an older scheduler (no records), or records of other sources (one upgraded
    since): the next scheduler process makes them when it first finds the environment current."""
    env, problem = EnvironmentManager(tmp_path / "state").ensure("acme", ())
    assert problem is None and env is not None, problem
    shutil.rmtree(env.path / CACHE_DIR)
    again, _ = EnvironmentManager(tmp_path / "state").ensure("acme", ())
    assert again is not None and again.path == env.path  # the same environment, not rebuilt
    assert (env.path / DIGEST_FILE).read_text() == sources_digest()
    assert {name: record[2] for name, record in records(env).items()} == {
        f"{path.name}.bin": path.read_bytes() for path in FILES}

    (env.path / DIGEST_FILE).write_text("records of another scheduler's files")
    (env.path / CACHE_DIR / "bootstrap.py.bin").write_bytes(marshal.dumps(("other", "x", b"", None)))
    manager = EnvironmentManager(tmp_path / "state")
    manager.ensure("acme", ())
    assert records(env)["bootstrap.py.bin"][1:3] == (str(BOOTSTRAP), BOOTSTRAP.read_bytes())
    (env.path / CACHE_DIR / "bootstrap.py.bin").unlink()
    manager.ensure("acme", ())  # once per environment and process: not looked at again
    assert not (env.path / CACHE_DIR / "bootstrap.py.bin").exists()
