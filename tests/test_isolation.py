"""One organisation's task attacks another's and the scheduler; every attack must fail.

Two real organisations in two real git repositories, run by the real scheduler with the
default ``isolation: sandbox`` (bubblewrap + one cgroup per run). The attacker ("alpha")
runs its notebook; the victim ("beta") runs before and after, and its results, log and
triggers must be untouched. Nothing here is mocked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import Repo, py_task, require_service, sandbox_missing, task_yaml, wait_for, write_settings

from peach_tasks.executors.sandbox import make_sandbox
from peach_tasks.scheduling.triggers import TriggerQueue

SECRET = "s3cret-" + uuid.uuid4().hex  # in the scheduler's environment and scheduler.yaml


@pytest.fixture(autouse=True)
def _needs_sandbox() -> None:
    require_service(sandbox_missing())


class Orgs:
    """alpha (the attacker) and beta (the victim), each in its own repository.

    ``ahead``: alpha's loop runs a harmless task first, so the attack runs in the sandbox
    the loop started ahead for it while that one ran (executors/warm.py)."""

    ahead = False

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.tmp = tmp_path
        self.alpha, self.beta = Repo(tmp_path / "alpha-repo"), Repo(tmp_path / "beta-repo")
        self.beta.notebook("victim.ipynb", "def main():\n    return 'victim-ok'\n")
        self.beta.write("peach.yaml", task_yaml("beta", {"job": py_task("victim.ipynb", "main")}))
        self.beta.commit("victim")
        self.config = write_settings(tmp_path, [{"url": str(self.alpha.path), "codops": ["alpha"]},
                                                {"url": str(self.beta.path), "codops": ["beta"]}],
                                     tokens=[{"token": SECRET, "codops": ["*"]}], **settings)
        self.state = tmp_path / "state"

    def attack(self, code: str, **task: Any) -> None:
        self.alpha.notebook("attack.ipynb", textwrap.dedent(code))
        tasks = {"attack": py_task("attack.ipynb", "main", **task)}
        if self.ahead:  # "aaa-first" runs before "attack" in alpha's loop
            self.alpha.notebook("first.ipynb", "def main():\n    return None\n")
            tasks = {"aaa-first": py_task("first.ipynb", "main"), **tasks}
        self.alpha.write("peach.yaml", task_yaml("alpha", tasks))
        self.alpha.commit("attack")


@pytest.fixture(autouse=True, params=["cold", "ahead"])
def start(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every attack runs twice: in a sandbox started with its run, and in one its loop
    started ahead (the attacker's code then runs where a waiting sandbox took its request)."""
    monkeypatch.setattr(Orgs, "ahead", request.param == "ahead")
    return request.param


def started_as_asked(run: dict[str, Any]) -> None:
    """The attack ran in a sandbox started ahead exactly when the test asked for one."""
    if run["peak_memory_bytes"] is not None:  # sandboxed (isolation: none has no cgroup)
        assert bool((run["details"] or {}).get("sandbox_started_ahead")) == Orgs.ahead, run


def runs(store: Any, codops: str, task: str) -> list[dict[str, Any]]:
    return store.runs(codops, task, limit=50)


def run_both(orgs: Orgs, open_scheduler: Any) -> tuple[Any, Any]:
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once(orgs=["beta"])  # the victim's first run: its checkout and environment exist
    scheduler.run_once(orgs=["alpha"])
    scheduler.run_once(orgs=["beta"])
    return scheduler, store


def assert_victim_untouched(store: Any) -> None:
    victim = runs(store, "beta", "job")
    assert [r["status"] for r in victim] == ["SUCCESS", "SUCCESS"], victim
    assert [r["result"] for r in victim] == ["victim-ok", "victim-ok"]
    assert all("PWNED" not in (store.log(r["id"]) or "") for r in victim)
    assert all(r["trigger_id"] is None for r in victim)  # neither was a forged trigger
    assert [t for t in TriggerQueue(store).pending() if t.key[0] == "beta"] == []


def attack_result(store: Any) -> Any:
    run = runs(store, "alpha", "attack")[0]
    assert run["status"] == "SUCCESS", (run, store.log(run["id"]))
    started_as_asked(run)
    return run["result"]


def test_secrets_store_and_other_files_are_out_of_reach(tmp_path: Path, open_scheduler: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEACH_TEST_SECRET", SECRET)  # the scheduler's own environment
    orgs = Orgs(tmp_path)
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once(orgs=["beta"])
    victim_checkout = next((orgs.state / "repos" / "beta-repo" / "checkouts").iterdir())
    targets = {
        "config": str(orgs.config), "db": str(orgs.state / "peach.db"), "state": str(orgs.state),
        "victim_env": str(orgs.state / "envs" / "beta" / "base" / "current"),
        "victim_notebook": str(victim_checkout / "victim.ipynb"),
        "victim_pth": str(orgs.state / "envs" / "beta" / "base" / "current" / "lib" / "evil.pth"),
    }
    orgs.attack(f"""
        import glob, json, os, sys
        T = {json.dumps(targets)}
        SECRET = {SECRET!r}
        def main():
            found = []
            for path in glob.glob("/proc/*/environ") + glob.glob("/proc/*/cmdline"):
                try:
                    data = open(path, "rb").read()
                except OSError:
                    continue
                if SECRET.encode() in data or b"scheduler.yaml" in data or b"PEACH_TASKS_DATABASE" in data:
                    found.append(path)
            reached = {{}}
            for name in ("config", "db", "victim_notebook"):
                try:
                    reached[name] = len(open(T[name], "rb").read())
                except OSError as exc:
                    pass
            if os.path.exists(T["victim_env"]):
                reached["victim_env"] = os.listdir(T["victim_env"])
            # what of state_dir can be seen at all: only this run's own folders
            seen = []
            for here, dirs, files in os.walk(T["state"]):
                seen += [os.path.relpath(os.path.join(here, n), T["state"]) for n in dirs + files]
            for name, path in (("victim_pth", T["victim_pth"]), ("victim_notebook_w", T["victim_notebook"])):
                try:
                    with open(path, "w") as f:
                        f.write("import sys; print('PWNED')")
                    reached[name] = "written"
                except OSError:
                    pass
            trigger_root = os.path.dirname(os.environ["PEACH_TRIGGER_DIR"])
            others = [n for n in os.listdir(trigger_root) if n != os.path.basename(os.environ["PEACH_TRIGGER_DIR"])]
            own_env_writable = os.access(sys.prefix, os.W_OK)
            try:
                open(os.path.join(sys.prefix, "evil.pth"), "w")
                own_env_writable = True
            except OSError:
                pass
            return {{"found": found, "reached": reached, "other_trigger_dirs": others, "state_seen": seen,
                     "own": os.path.basename(os.environ["PEACH_TRIGGER_DIR"]),
                     "own_env_writable": own_env_writable, "uid": os.getuid(), "pids": sorted(
                     int(p) for p in os.listdir("/proc") if p.isdigit())}}
    """)
    scheduler.run_once(orgs=["alpha"])
    scheduler.run_once(orgs=["beta"])
    result = attack_result(store)
    assert result["found"] == [] and result["reached"] == {}, result
    assert result["other_trigger_dirs"] == [] and result["own_env_writable"] is False
    seen = result["state_seen"]
    assert seen and "peach.db" not in seen and not [p for p in seen if "beta" in p], seen  # only its own bits
    # Its own folders are named by its run, or by the sandbox started ahead for it.
    own = result["own"]
    assert own == (own if Orgs.ahead else str(runs(store, "alpha", "attack")[0]["id"]))
    assert {p.split("/")[1] for p in seen if p.startswith(("runs/", "trigger-requests/"))} == {own}, seen
    assert result["uid"] != 0 and max(result["pids"]) < 20  # its own small PID namespace
    assert_victim_untouched(store)
    assert "PWNED" not in (victim_checkout / "victim.ipynb").read_text()


@pytest.mark.parametrize("own_user", [True, False])
def test_each_organisation_runs_as_its_own_user(tmp_path: Path, open_scheduler: Any, own_user: bool) -> None:
    """Under a root scheduler, alpha's and beta's runs have users of their own (user_for), so
    what the kernel keeps per user and no namespace separates is theirs alone: the third
    hostile pass used up beta's inotify instances from alpha's task while both ran as 65534.
    Here alpha holds 128 inotify instances (the default per-user maximum) while beta's run,
    at the same time, makes one; with ``user_per_organisation: false`` it cannot."""
    if os.geteuid() != 0:
        pytest.skip("as an ordinary user every run is the scheduler's user (in a user namespace)")
    from peach_tasks.executors.sandbox import SANDBOX_UID, user_for

    orgs = Orgs(tmp_path, python={"user_per_organisation": own_user})
    orgs.beta.notebook("victim.ipynb", """
import ctypes, getpass, os, pwd, time
def main():
    time.sleep(3)  # alpha holds its instances by now
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init()
    # and the user has a name and a home (Java's user.home, getpass), as nobody has
    return [os.getuid(), 'inotify ok' if fd >= 0 else os.strerror(ctypes.get_errno()), getpass.getuser(),
            pwd.getpwuid(os.getuid()).pw_dir]
""")
    orgs.beta.commit("victim")
    orgs.attack("""
        import ctypes, os, time
        def main():
            libc = ctypes.CDLL(None, use_errno=True)
            held = []
            while len(held) < 4096 and (fd := libc.inotify_init()) >= 0:
                held.append(fd)
            time.sleep(8)  # while beta's run goes
            return [os.getuid(), len(held)]
    """)
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once()  # both organisations' loops at once
    alpha_uid, held = attack_result(store)
    [victim] = runs(store, "beta", "job")
    if own_user:
        assert alpha_uid == user_for("alpha")[0] and held >= 128
        assert victim["result"] == [user_for("beta")[0], "inotify ok", "peach", "/tmp/home"], victim
        assert user_for("alpha") != user_for("beta") and alpha_uid > 65534
    else:
        assert alpha_uid == SANDBOX_UID
        assert victim["result"][:3] == [SANDBOX_UID, "Too many open files", "nobody"], victim


def test_forged_trigger_for_another_organisation_is_refused(tmp_path: Path, open_scheduler: Any) -> None:
    orgs = Orgs(tmp_path)
    orgs.attack(f"""
        import json, os, sqlite3, uuid
        STATE = {str(orgs.state)!r}
        def main():
            done = []
            try:  # straight into the store
                con = sqlite3.connect(os.path.join(STATE, "peach.db"))
                con.execute("insert into triggers (codops, task, status) values ('beta', 'job', 'PENDING')")
                con.commit()
                done.append("store")
            except Exception:
                pass
            # into the victim's run folders, by guessing their ids
            root = os.path.dirname(os.environ["PEACH_TRIGGER_DIR"])
            for run_id in range(1, 30):
                folder = os.path.join(root, str(run_id))
                if folder == os.environ["PEACH_TRIGGER_DIR"]:
                    continue
                try:
                    os.makedirs(folder, exist_ok=True)
                    with open(os.path.join(folder, uuid.uuid4().hex + ".json"), "w") as f:
                        json.dump({{"codops": "beta", "task": "job", "payload": "PWNED"}}, f)
                    done.append(run_id)
                except OSError:
                    pass
            # and through its own folder: the scheduler must refuse another organisation's task
            with open(os.path.join(os.environ["PEACH_TRIGGER_DIR"], "x.json"), "w") as f:
                json.dump({{"codops": "beta", "task": "job", "payload": "PWNED"}}, f)
            return done
    """)
    scheduler, store = run_both(orgs, open_scheduler)
    assert attack_result(store) == []
    log = store.log(runs(store, "alpha", "attack")[0]["id"]) or ""
    assert "trigger of beta/job refused" in log
    assert_victim_untouched(store)


def test_own_checkout_is_writable_but_private_to_the_run(tmp_path: Path, open_scheduler: Any) -> None:
    orgs = Orgs(tmp_path)
    orgs.attack("""
        import os
        def main():
            seen = os.path.exists("left-by-last-run.txt")
            with open("left-by-last-run.txt", "w") as f:  # next to the notebook, as in Jupyter
                f.write("x")
            with open("attack.ipynb", "w") as f:  # even the notebook itself
                f.write("{}")
            return {"seen": seen, "cwd": os.getcwd(), "home": os.environ["HOME"],
                    "home_writable": os.access(os.environ["HOME"], os.W_OK)}
    """)
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once(orgs=["alpha"])
    scheduler.run_once(orgs=["alpha"])
    results = [r["result"] for r in runs(store, "alpha", "attack")]
    assert [r["seen"] for r in results] == [False, False], results  # each run starts from the commit
    checkout = next((orgs.state / "repos" / "alpha-repo" / "checkouts").iterdir())
    assert results[0]["cwd"] == str(checkout) and results[0]["home_writable"]
    assert not (checkout / "left-by-last-run.txt").exists()
    assert json.loads((checkout / "attack.ipynb").read_text())["cells"]  # the committed notebook


def test_the_sandboxs_own_host_name_resolves(tmp_path: Path, open_scheduler: Any) -> None:
    """The sandbox has a host name of its own (its UTS namespace, the host's is not shown);
    like a host's, it resolves: PySpark's Java gateway (InetAddress.getLocalHost) failed to
    start without it ("UnknownHostException: peach"), as did gethostbyname(gethostname())."""
    orgs = Orgs(tmp_path)
    orgs.attack("""
        import socket
        def main():
            name = socket.gethostname()
            return [name, socket.gethostbyname(name), socket.gethostbyname("localhost")]
    """)
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once(orgs=["alpha"])
    assert attack_result(store) == ["peach", "127.0.0.1", "127.0.0.1"]


def test_multiprocessing_works_and_dev_shm_is_the_runs_own(tmp_path: Path, open_scheduler: Any) -> None:
    """Python's multiprocessing (a Pool, a Queue, a ProcessPoolExecutor; joblib and
    scikit-learn's n_jobs use the same locks) needs a writable /dev/shm for its semaphores.
    Each run has its own, empty, as its /tmp: nothing of it reaches the host or the next run."""
    orgs = Orgs(tmp_path)
    orgs.attack("""
        import multiprocessing, os
        from concurrent.futures import ProcessPoolExecutor

        def square(x):
            return x * x

        def main():
            seen = sorted(os.listdir("/dev/shm"))
            with open("/dev/shm/left-by-" + os.environ["PEACH_RUN_ID"], "w") as f:
                f.write("x")
            with multiprocessing.Pool(2) as pool:
                pooled = pool.map(square, range(5))
            queue = multiprocessing.Queue()
            queue.put("queued")
            with ProcessPoolExecutor(2) as executor:
                executed = list(executor.map(square, range(3)))
            return {"seen": seen, "pooled": pooled, "queued": queue.get(timeout=30), "executed": executed}
    """)
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once(orgs=["alpha"])
    scheduler.run_once(orgs=["alpha"])
    attack_result(store)  # the last run succeeded, in the sandbox the test asked for
    results = [r["result"] for r in runs(store, "alpha", "attack")]
    assert [r["seen"] for r in results] == [[], []], results  # neither saw the other's file
    assert all(r["pooled"] == [0, 1, 4, 9, 16] and r["queued"] == "queued" and r["executed"] == [0, 1, 4]
               for r in results), results
    assert not [name for name in os.listdir("/dev/shm") if name.startswith("left-by-")]


def test_task_code_starts_in_a_whole_copy_and_a_failed_copy_fails_the_run(tmp_path: Path,
                                                                            open_scheduler: Any) -> None:
    """The copy is made while the interpreter starts (bootstrap.py waits for it): the task's
    first line already sees all of it, and a copy that fails is the run's failure, before
    any of the task's code."""
    orgs = Orgs(tmp_path)
    for i in range(2000):  # about 60 ms to copy: longer than the interpreter's start
        orgs.alpha.write(f"data/f{i:04d}.txt", str(i))
    orgs.attack("""
        import os
        print("TASK-CODE-RAN")
        FILES = sorted(os.listdir("data"))  # at import of the cell, the task's first line
        def main():
            return {"files": len(FILES), "last": open("data/" + FILES[-1]).read(), "cwd": os.getcwd(),
                    "beside": sorted(os.listdir(".."))}
    """)
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once(orgs=["alpha"])
    result = attack_result(store)
    checkout = next((orgs.state / "repos" / "alpha-repo" / "checkouts").iterdir())
    assert result == {"files": 2000, "last": "1999", "cwd": str(checkout), "beside": [checkout.name]}

    (checkout / "data" / "f1500.txt").chmod(0)  # the task's user cannot read it: cp fails
    try:
        scheduler.run_once(orgs=["alpha"])
    finally:
        (checkout / "data" / "f1500.txt").chmod(0o644)
    failed = runs(store, "alpha", "attack")[0]
    log = store.log(failed["id"]) or ""
    assert failed["status"] == "FAILURE" and failed["exit_code"] == 125, (failed, log)
    assert "the private copy of the checkout failed" in log and "TASK-CODE-RAN" not in log


def test_signals_at_the_scheduler_change_nothing(tmp_path: Path) -> None:
    """SIGTERM and SIGSTOP at getppid() and at every pid the task can see; the scheduler is a
    real ``peach-tasks run-once`` process here, so a stopped scheduler fails the test in time."""
    orgs = Orgs(tmp_path, timeouts={"task": 20, "metadata": 10, "kill_grace": 1})
    orgs.attack("""
        import os, signal
        def main():
            hit = []
            targets = {os.getppid()} | {int(p) for p in os.listdir("/proc") if p.isdigit()}
            for pid in sorted(targets - {os.getpid()}):
                for sig in (signal.SIGSTOP, signal.SIGTERM):
                    try:
                        os.kill(pid, sig)
                        hit.append(pid)
                    except OSError:
                        pass
            return hit
    """)
    orgs.beta.notebook("victim.ipynb", "import time\ndef main():\n    time.sleep(3)\n    return 'victim-ok'\n")
    orgs.beta.commit("slower victim, so both run at once")
    done = subprocess.run([sys.executable, "-m", "peach_tasks.cli", "--config", str(orgs.config), "run-once"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    from peach_tasks.settings import load_settings
    from peach_tasks.store import Store

    store = Store.open(load_settings(orgs.config).database_url)
    try:
        # It could signal only processes of its own sandbox (its PID 1 ignores it).
        assert max(attack_result(store), default=0) < 20
        victim = runs(store, "beta", "job")
        assert [(r["status"], r["result"]) for r in victim] == [("SUCCESS", "victim-ok")]
        assert victim[0]["duration_s"] < 15  # not frozen until a timeout
    finally:
        store.close()


def test_daemon_and_fork_bomb_leave_nothing_behind(tmp_path: Path, open_scheduler: Any) -> None:
    token = "peach-daemon-" + uuid.uuid4().hex
    orgs = Orgs(tmp_path, python={"pids": 64})
    orgs.attack(f"""
        import os, subprocess, sys, time
        def main():
            # a double-forking daemon, its own session, an empty environment
            subprocess.Popen([sys.executable, "-c",
                "import os, subprocess, sys\\n"
                "subprocess.Popen(['/bin/sleep', '300', {token!r}], start_new_session=True, env={{}})"],
                env={{}}, start_new_session=True).wait()
            children = []
            for _ in range(200):
                try:
                    children.append(subprocess.Popen(["/bin/sleep", "300", {token!r}]))
                except OSError:
                    break
            return len(children)
    """)
    scheduler, store = run_both(orgs, open_scheduler)
    started = attack_result(store)
    assert 0 < started < 64  # pids: 64 stopped the fork loop

    def leftovers() -> list[int]:
        return [p.pid for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]

    wait_for(lambda: not leftovers(), 5, "every process of the run to be gone", leftovers)
    assert_victim_untouched(store)


def test_memory_limit_fails_the_run_with_its_reason_while_the_other_org_succeeds(
        tmp_path: Path, open_scheduler: Any) -> None:
    orgs = Orgs(tmp_path, organisations={"alpha": {"python": {"memory": "256M"}}})
    orgs.attack("""
        def main():
            blocks = []
            for _ in range(64):
                blocks.append(bytearray(16 << 20))  # 1 GiB in all, touched
            return len(blocks)
    """)
    scheduler, store = run_both(orgs, open_scheduler)
    run = runs(store, "alpha", "attack")[0]
    assert run["status"] == "FAILURE"
    started_as_asked(run)
    assert "ran out of memory" in run["error"] and "256M" in run["error"]
    assert 200 << 20 < run["peak_memory_bytes"] <= 256 << 20
    victim = runs(store, "beta", "job")
    assert all(r["status"] == "SUCCESS" for r in victim)
    assert victim[0]["peak_memory_bytes"] > 0 and victim[0]["cpu_seconds"] > 0


def test_network_off_per_organisation(tmp_path: Path, open_scheduler: Any) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def accept() -> None:
        try:
            while True:
                server.accept()[0].close()
        except OSError:  # closed at the end of the test
            pass

    threading.Thread(target=accept, daemon=True).start()
    orgs = Orgs(tmp_path, organisations={"alpha": {"python": {"network": False}}})
    code = f"""
        import socket
        def main():
            try:
                socket.create_connection(("127.0.0.1", {port}), 3).close()
                return "connected"
            except OSError as exc:
                return type(exc).__name__
    """
    orgs.attack(code)
    orgs.beta.notebook("victim.ipynb", textwrap.dedent(code))
    orgs.beta.commit("the victim connects too")
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once()
    assert runs(store, "alpha", "attack")[0]["result"] in ("ConnectionRefusedError", "OSError")
    started_as_asked(runs(store, "alpha", "attack")[0])
    assert runs(store, "beta", "job")[0]["result"] == "connected"
    server.close()


def test_isolation_none_runs_plain_processes(tmp_path: Path, open_scheduler: Any) -> None:
    orgs = Orgs(tmp_path, isolation="none")
    orgs.attack("import os\ndef main():\n    return os.getuid()\n")
    scheduler, store = run_both(orgs, open_scheduler)
    assert attack_result(store) == os.getuid()  # the scheduler's own user: no sandbox
    assert runs(store, "alpha", "attack")[0]["peak_memory_bytes"] is None


def test_without_bubblewrap_several_organisations_are_refused(tmp_path: Path, open_scheduler: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # bubblewrap cannot be uninstalled for a test: its absence is what the lookup reports.
    import peach_tasks.executors.sandbox as sandbox

    real_which = sandbox.shutil.which
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None if name == "bwrap" else real_which(name))
    make_sandbox.cache_clear()
    try:
        orgs = Orgs(tmp_path)
        orgs.attack("def main():\n    return 1\n")
        scheduler, store = open_scheduler(orgs.config)
        with pytest.raises(Exception, match="bubblewrap.*Refusing to run tasks of 2 organisations"):
            scheduler.run_once()
        assert runs(store, "alpha", "attack") == [] and runs(store, "beta", "job") == []
        # one organisation: it runs, with a warning
        (tmp_path / "one").mkdir()
        only_beta = write_settings(tmp_path / "one", [{"url": str(orgs.beta.path), "codops": ["beta"]}])
        scheduler, store = open_scheduler(only_beta)
        scheduler.run_once()
        assert runs(store, "beta", "job")[0]["status"] == "SUCCESS"
    finally:
        make_sandbox.cache_clear()


def test_sigterm_at_a_task_gives_it_its_grace_then_kills(tmp_path: Path, open_scheduler: Any) -> None:
    orgs = Orgs(tmp_path, timeouts={"task": 2, "metadata": 2, "kill_grace": 1})
    orgs.attack("""
        import signal, time
        def main():
            signal.signal(signal.SIGTERM, lambda *a: print("got SIGTERM", flush=True))
            while True:
                time.sleep(0.1)
    """)
    scheduler, store = open_scheduler(orgs.config)
    scheduler.run_once(orgs=["alpha"])
    run = runs(store, "alpha", "attack")[0]
    assert run["status"] == "TIMEOUT"
    started_as_asked(run)
    assert "got SIGTERM" in (store.log(run["id"]) or "")  # the grace period reached the task
    assert run["cpu_seconds"] is not None


def test_links_and_fifos_left_for_the_scheduler_are_not_followed(tmp_path: Path, open_scheduler: Any) -> None:
    secret = tmp_path / "root-only.json"
    secret.write_text(json.dumps({"ok": True, "result": SECRET}))
    secret.chmod(0o600)
    orgs = Orgs(tmp_path)
    orgs.attack(f"""
        import glob, os
        def main():
            # the run's own folders, where the scheduler looks after the run
            for folder in glob.glob({str(orgs.state / "runs" / "*")!r}):
                os.symlink({str(secret)!r}, os.path.join(folder, "result.json.link"))
                os.rename(os.path.join(folder, "result.json.link"), os.path.join(folder, "result.json"))
            os.mkfifo(os.path.join(os.environ["PEACH_TRIGGER_DIR"], "hang.json"))
            os.symlink({str(secret)!r}, os.path.join(os.environ["PEACH_TRIGGER_DIR"], "leak.json"))
            os._exit(0)  # no result of its own: the scheduler would read the link
    """)
    scheduler, store = run_both(orgs, open_scheduler)  # returns: the FIFO did not block the loop
    run = runs(store, "alpha", "attack")[0]
    assert run["status"] == "SUCCESS" and run["result"] is None, run
    started_as_asked(run)
    log = store.log(run["id"]) or ""
    assert SECRET not in log and "hang.json is unreadable" in log and "leak.json is unreadable" in log
    assert_victim_untouched(store)
