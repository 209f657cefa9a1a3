"""What an organisation's requirements can reach while its environment is built. A
requirement's build backend runs at build time, and its ``.pth`` file at every start of the
environment's interpreter (the build's own steps included): both attack here, with real uv,
real bubblewrap and packages served over loopback (what a build may reach)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from build_packages import serve, write_sdist, write_wheel
from conftest import Repo, require_service, sandbox_missing, write_settings

from peach_tasks.executors.environments import BUILD_ENV, EnvironmentManager, build_env
from peach_tasks.executors.sandbox import make_sandbox

# Runs at interpreter start: records the variables it sees in the environment's own folder.
LEAK_PTH = ("import os, sys, json; p = os.path.join(sys.prefix, 'seen-env.json'); "
            "os.path.exists(p) or open(p, 'w').write(json.dumps(dict(os.environ)))\n")

# What the attacker tries, at build time (its backend) and at interpreter start (its .pth):
# read files it must not see, write where it must not, and leave links for the scheduler to
# write through. Records what worked.
ATTACK = '''
import json, os, sys
TARGETS = json.loads({targets!r})

def attempt(stage):
    report = {{"uid": os.getuid(), "read": {{}}, "wrote": {{}}}}
    for path in TARGETS["read"]:
        try:
            with open(path) as f:
                report["read"][path] = f.read()
        except OSError:
            report["read"][path] = None
    for path in TARGETS["write"]:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + "-" + stage, "w") as f:
                f.write("pwned")
            report["wrote"][path] = True
        except OSError:
            report["wrote"][path] = False
    return report
'''

# At interpreter start: the attack, then links where the scheduler writes after the build.
START = '''
import os, sys, json
from evil_attack import attempt, TARGETS
try:
    report = attempt("start")
    with open(os.path.join(sys.prefix, "evil-start.json"), "w") as f:
        f.write(json.dumps(report))
    for name in ("peach-env.json", "share/peach-tasks/bytecode/sources.sha256"):
        link = os.path.join(sys.prefix, name)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(TARGETS["victim"], link)
except OSError:
    pass
'''

# A stand-in matplotlib: the build's font list step finds it and leaves a link to a secret file.
FAKE_FONT_MANAGER = '''
import os, json
from evil_attack import TARGETS
folder = os.environ["MPLCONFIGDIR"]
os.makedirs(folder, exist_ok=True)
os.symlink(TARGETS["shadow"], os.path.join(folder, "fontlist-v1.json"))
'''

BACKEND = '''
import json, os
from evil_attack import attempt
import wheel_maker

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = json.loads(open("payload.json").read())
    files["evil_build.json"] = json.dumps(attempt("build"))
    name = "evil-1.0-py3-none-any.whl"
    with open(os.path.join(wheel_directory, name), "wb") as out:
        out.write(wheel_maker.wheel_bytes("evil", files))
    return name
'''


def _wheel_maker_source() -> str:
    return Path(__file__).with_name("build_packages.py").read_text()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "index"
    folder.mkdir()
    with serve(folder) as url:
        yield folder, url


def test_the_build_gets_only_what_finding_packages_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         index: tuple[Path, str]) -> None:
    monkeypatch.setenv("PEACH_TEST_ADMIN_PASSWORD", "hunter2")
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin:secret@db/peach")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "61")  # index configuration an operator sets: kept
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    folder, url = index
    wheel = write_wheel(folder, "leaky", {"leaky.pth": LEAK_PTH})
    env, problem = EnvironmentManager(tmp_path / "state").ensure("acme", (f"leaky @ {url}/{wheel}",))
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


def test_a_requirement_reaches_nothing_outside_its_build(tmp_path: Path, index: tuple[Path, str]) -> None:
    require_service(sandbox_missing())
    folder, url = index
    state = tmp_path / "state"
    manager = EnvironmentManager(state, sandbox=make_sandbox())
    # The victim organisation: an environment built before, its checkout, the scheduler's secret.
    beta_wheel = write_wheel(folder, "betapkg", {"betapkg.py": "VALUE = 1\n"})
    beta, problem = manager.ensure("beta", (f"betapkg @ {url}/{beta_wheel}",))
    assert problem is None and beta is not None, problem
    beta_files = sorted(str(p.relative_to(beta.path)) for p in beta.path.rglob("*"))
    checkout = state / "repos" / "beta" / "notebook.py"
    checkout.parent.mkdir(parents=True)
    checkout.write_text("BETA-NOTEBOOK")
    (state / "redis-secret").write_text("REDIS-SECRET")
    victim = tmp_path / "victim.txt"
    victim.write_text("VICTIM")
    shadow = tmp_path / "shadow"
    shadow.write_text("SHADOW-SECRET")
    host_tmp = Path("/tmp") / f"peach-build-test-{uuid.uuid4().hex}"
    writes = [str(state / "pwned"), str(beta.path / "pwned"), str(state / "uv-cache" / "beta" / "pwned"),
              str(tmp_path / "outside" / "pwned"), str(host_tmp)]
    targets = {"read": [str(checkout), str(state / "redis-secret"), str(beta.path / "pyvenv.cfg"), str(shadow)],
               "write": writes, "victim": str(victim), "shadow": str(shadow)}
    attack = ATTACK.format(targets=json.dumps(targets))
    payload = {"evil_attack.py": attack, "evil.pth": "import evil_start\n", "evil_start.py": START,
               "matplotlib/__init__.py": "", "matplotlib/font_manager.py": FAKE_FONT_MANAGER}
    sdist = write_sdist(folder, "evil", {"backend.py": BACKEND, "evil_attack.py": attack,
                                          "wheel_maker.py": _wheel_maker_source(),
                                          "payload.json": json.dumps(payload)})

    env, problem = manager.ensure("alpha", (f"evil @ {url}/{sdist}",))
    assert problem is None and env is not None, problem
    site = next(env.path.glob("lib/python*/site-packages"))
    at_build = json.loads((site / "evil_build.json").read_text())
    at_start = json.loads((env.path / "evil-start.json").read_text())
    for report in (at_build, at_start):
        assert report["read"] == dict.fromkeys(targets["read"]), report["read"]
        if os.geteuid() == 0:
            assert report["uid"] == 65534
    for path in writes:
        assert not any(Path(path).parent.glob(Path(path).name + "*")), path
    assert victim.read_text() == "VICTIM" and shadow.read_text() == "SHADOW-SECRET"
    # The scheduler wrote its own files, through no link the build left; nothing in the
    # environment leads to the victim's files or holds their contents.
    assert not (env.path / "peach-env.json").is_symlink()
    assert json.loads((env.path / "peach-env.json").read_text())["codops"] == "alpha"
    for path in env.path.rglob("*"):
        if path.is_symlink():
            assert Path(os.path.realpath(path)) not in (victim, shadow), path
        elif path.is_file():
            data = path.read_bytes()
            assert b"SHADOW-SECRET" not in data and b"REDIS-SECRET" not in data and b"BETA-NOTEBOOK" not in data
    if os.geteuid() == 0:  # the scheduler's again once built
        assert all(p.lstat().st_uid == 0 for p in [env.path, *env.path.rglob("*")])
    # The other organisation: untouched, and its builds go on.
    assert sorted(str(p.relative_to(beta.path)) for p in beta.path.rglob("*")) == beta_files
    other = write_wheel(folder, "other", {"other.py": ""})
    again, problem = manager.ensure("beta", (f"betapkg @ {url}/{beta_wheel}", f"other @ {url}/{other}"))
    assert problem is None and again is not None and not any(again.path.rglob("evil*")), problem


# Records who ran it, at interpreter start, in the environment's own folder.
WHO_PTH = ("import os, sys, json; p = os.path.join(sys.prefix, 'who.json'); "
           "os.path.exists(p) or open(p, 'w').write(json.dumps({'uid': os.getuid(), 'env': dict(os.environ)}))\n")


def test_the_scheduler_builds_in_its_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             index: tuple[Path, str], open_scheduler: Any) -> None:
    require_service(sandbox_missing())
    folder, url = index
    write_wheel(folder, "peach_tasks_test_build_probe", {"probe_who.pth": WHO_PTH})
    monkeypatch.setenv("UV_FIND_LINKS", url + "/")  # the folder's listing: an operator's index setting
    monkeypatch.setenv("PEACH_TEST_ADMIN_PASSWORD", "hunter2")
    repo = Repo(tmp_path / "repo")
    repo.notebook("probe.ipynb", "def probe():\n    return 1\n")
    repo.write("peach.yaml", "codops: chrts\ndependencies: [peach-tasks-test-build-probe]\n"
                             "tasks:\n  probe:\n    notebook: probe.ipynb\n    method: probe\n    executor: python\n")
    repo.commit()
    scheduler, store = open_scheduler(write_settings(tmp_path, [{"url": str(repo.path)}]))
    scheduler.start_isolation()
    scheduler.sync()
    env = scheduler.envs.current("chrts")
    assert env is not None, store.problems()
    who = json.loads((env.path / "who.json").read_text())
    assert who["env"]["HOME"] == "/tmp/home" and "PEACH_TEST_ADMIN_PASSWORD" not in who["env"]
    assert who["env"]["UV_LINK_MODE"] == "copy"  # no hardlink across the sandbox's mounts
    if os.geteuid() == 0:
        assert who["uid"] == 65534
        assert env.path.stat().st_uid == 0 and (env.path / "who.json").stat().st_uid == 0
