"""Each organisation's Redis, on the real server at 127.0.0.1:6379 (README: how to get one).

The server is shared with other test runs: every test makes its own admin user, its own
organisation user prefix and key prefix (``t<hex>:``), and removes them all afterwards.
"""

from __future__ import annotations

import json
import secrets
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Repo, require_service, shared_folder, write_settings
from web_helpers import start_server

from peach_tasks.executors.org_redis import OrganisationRedis
from peach_tasks.settings import RedisSettings, load_settings

REDIS = ("127.0.0.1", 6379)
ADMIN_ENV = "PEACH_REDIS_ADMIN_PASSWORD"


def redis_missing() -> str | None:
    try:
        with socket.create_connection(REDIS, timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                return "127.0.0.1:6379 does not answer as Redis"
    except OSError as exc:
        return f"no Redis on 127.0.0.1:6379 ({exc}); apt-get install redis-server (README)"
    return None


class Platform:
    """A fresh admin user and prefixes on the shared server; ``cleanup`` removes all of it."""

    def __init__(self) -> None:
        import redis

        tag = secrets.token_hex(4)
        self.admin_user, self.admin_password = f"peach-test-admin-{tag}", secrets.token_hex(16)
        self.user_prefix, self.key_prefix = f"peach-test-{tag}-", f"t{tag}:"
        self.server = redis.Redis(*REDIS, decode_responses=True)  # the server's own default user
        self.server.acl_setuser(self.admin_user, enabled=True, passwords=[f"+{self.admin_password}"],
                                keys=["*"], channels=["*"], commands=["+@all"])

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"url": "redis://127.0.0.1:6379/0", "admin_user": self.admin_user, "admin_password_env": ADMIN_ENV,
                "user_prefix": self.user_prefix, "key_prefix": self.key_prefix, **extra}

    def cleanup(self) -> None:
        users = [u for u in self.server.acl_users() if u.startswith((self.user_prefix, self.admin_user))]
        if users:
            self.server.acl_deluser(*users)
        keys = list(self.server.scan_iter(match=f"{self.key_prefix}*", count=1000))
        if keys:
            self.server.delete(*keys)
        self.server.close()


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch) -> Any:
    require_service(redis_missing())
    made = Platform()
    monkeypatch.setenv(ADMIN_ENV, made.admin_password)
    yield made
    made.cleanup()


# chrts's task: its own keys work; the rest of the server is refused by the server itself.
CHRTS = """\
import json, os
import redis

OTHER = os.environ["PEACH_REDIS_PREFIX"].replace(":chrts:", ":sesr:")

def main():
    url, prefix = os.environ["PEACH_REDIS_URL"], os.environ["PEACH_REDIS_PREFIX"]
    r = redis.Redis.from_url(url, decode_responses=True)
    r.set(prefix + "weights", json.dumps([0.5, -1.25]))
    r.hset(prefix + "model", mapping={"accuracy": "0.97"})
    seen = {"weights": json.loads(r.get(prefix + "weights")), "model": r.hgetall(prefix + "model")}
    tried = {}
    for name, command in [("get sesr", ("GET", OTHER + "secret")), ("set sesr", ("SET", OTHER + "x", "1")),
                          ("del sesr", ("DEL", OTHER + "secret")), ("flushall", ("FLUSHALL",)),
                          ("flushdb", ("FLUSHDB",)), ("config", ("CONFIG", "GET", "*")), ("keys", ("KEYS", "*")),
                          ("keys own", ("KEYS", prefix + "*")), ("scan", ("SCAN", "0")),
                          ("eval", ("EVAL", "return 1", "0")), ("acl", ("ACL", "LIST")), ("select", ("SELECT", "1")),
                          ("info", ("INFO",)), ("client list", ("CLIENT", "LIST")),
                          ("publish sesr", ("PUBLISH", OTHER + "news", "x")), ("shutdown", ("SHUTDOWN",)),
                          ("rename out", ("RENAME", prefix + "weights", OTHER + "stolen")),
                          # others' key and channel names (the hostile pass)
                          ("tracking", ("CLIENT", "TRACKING", "on", "BCAST", "PREFIX", OTHER)),
                          ("channels", ("PUBSUB", "CHANNELS", "*")), ("numsub", ("PUBSUB", "NUMSUB", OTHER + "news"))]:
        try:
            r.execute_command(*command)
            tried[name] = "ALLOWED"
        except redis.exceptions.NoPermissionError:
            tried[name] = "NOPERM"
        except redis.RedisError as exc:
            tried[name] = f"{type(exc).__name__}: {exc}"
    r.publish(prefix + "news", "trained")  # its own channel
    return {"seen": seen, "tried": tried, "prefix": prefix, "user": url.split("://")[1].split(":")[0]}
"""

SESR = """\
import os
import redis

def main():
    r = redis.Redis.from_url(os.environ["PEACH_REDIS_URL"], decode_responses=True)
    return r.get(os.environ["PEACH_REDIS_PREFIX"] + "secret")
"""

# What a task can find of the admin password: its environment, every process's it can read,
# and every file it can read under the platform's folder (settings, state, checkouts).
SNOOP = """\
import os

def main():
    found = [f"{k}={v}" for k, v in os.environ.items()]
    for pid in os.listdir("/proc"):
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    found.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
    read = 0
    for folder, _, files in os.walk(PLATFORM):
        for name in files:
            try:
                with open(os.path.join(folder, name), "rb") as f:
                    found.append(f.read(1 << 20).decode("utf-8", "replace"))
                    read += 1
            except OSError:
                pass
    with open(os.path.join(OUT, "seen.txt"), "w") as f:
        f.write("\\n".join(found))
    return {"files_read": read, "has_url": "PEACH_REDIS_URL" in os.environ}
"""


def platform_repo(root: Path, out: Path) -> Repo:
    repo = Repo(root / "orgs")
    repo.notebook("chrts.ipynb", CHRTS)
    repo.notebook("sesr.ipynb", SESR)
    repo.notebook("snoop.ipynb", f"PLATFORM = {str(root)!r}\nOUT = {str(out)!r}\n" + SNOOP)
    repo.write("peach.conf/chrts.yaml", "codops: chrts\ndependencies: [redis]\ntasks:\n"
                                        "  train: {notebook: chrts.ipynb, method: main, executor: python}\n"
                                        "  snoop: {notebook: snoop.ipynb, method: main, executor: python}\n")
    repo.write("peach.conf/sesr.yaml", "codops: sesr\npy_environments:\n  base: {dependencies: [redis]}\n"
                                       "tasks:\n  read: {notebook: sesr.ipynb, method: main, executor: python}\n")
    repo.commit()
    return repo


@pytest.mark.slow
def test_each_organisation_is_kept_to_its_namespace_by_the_server(tmp_path: Path, platform: Platform,
                                                                   open_scheduler: Any) -> None:
    out = tmp_path / "out"
    repo = platform_repo(tmp_path, out)
    platform.server.set(f"{platform.key_prefix}sesr:secret", "sesr's own")
    config = write_settings(tmp_path, [{"url": str(repo.path)}], redis=platform.settings(), **shared_folder(out))
    scheduler, store = open_scheduler(config)
    scheduler.run_once()

    run = store.runs("chrts", "train", limit=1)[0]
    assert run["status"] == "SUCCESS", store.log(run["id"])
    result = run["result"]
    assert result["seen"] == {"weights": [0.5, -1.25], "model": {"accuracy": "0.97"}}
    assert result["prefix"] == f"{platform.key_prefix}chrts:" and result["user"] == f"{platform.user_prefix}chrts"
    assert result["tried"] == {name: "NOPERM" for name in result["tried"]}, result["tried"]
    assert len(result["tried"]) == 20
    # The server kept sesr's key, and its task reads it with its own user.
    assert platform.server.get(f"{platform.key_prefix}sesr:secret") == "sesr's own"
    assert platform.server.get(f"{platform.key_prefix}chrts:weights") == "[0.5, -1.25]"
    sesr = store.runs("sesr", "read", limit=1)[0]
    assert (sesr["status"], sesr["result"]) == ("SUCCESS", "sesr's own"), store.log(sesr["id"])

    # The admin password reaches no task: not its environment, no process it can see, no file.
    snoop = store.runs("chrts", "snoop", limit=1)[0]
    assert snoop["status"] == "SUCCESS" and snoop["result"]["has_url"], store.log(snoop["id"])
    assert snoop["result"]["files_read"] > 0  # it did read what it could (its checkout copy...)
    seen = (out / "seen.txt").read_text()
    assert "PEACH_REDIS_URL=redis://" in seen and platform.admin_password not in seen
    assert ADMIN_ENV not in seen and platform.admin_user not in seen

    # The API: keys and memory per organisation's namespace, nothing of the values.
    web = start_server(scheduler.settings, store)
    try:
        usage = httpx.get(web.url + "/api/organisations/chrts/redis", timeout=30).json()
        assert (usage["keys"], usage["complete"], usage["namespace"]) == (2, True, f"{platform.key_prefix}chrts:")
        assert usage["memory_bytes"] > 0 and "0.97" not in json.dumps(usage)
        assert httpx.get(web.url + "/api/organisations/sesr/redis", timeout=30).json()["keys"] == 1
        assert httpx.get(web.url + "/api/organisations/nobody/redis", timeout=30).status_code == 404
    finally:
        web.stop()
    guarded = start_server(scheduler.settings, store, tokens=[{"token": "sesr-token-0123456789", "codops": ["sesr"]}])
    try:
        headers = {"Authorization": "Bearer sesr-token-0123456789"}
        assert httpx.get(guarded.url + "/api/organisations/chrts/redis", headers=headers, timeout=30).status_code == 403
        assert httpx.get(guarded.url + "/api/organisations/sesr/redis", headers=headers, timeout=30).status_code == 200
    finally:
        guarded.stop()


def test_passwords_rotate_and_the_previous_one_outlives_a_run(tmp_path: Path, platform: Platform) -> None:
    import redis

    now = [1_000_000.0]
    orgs = OrganisationRedis(RedisSettings(**platform.settings(rotate=3600.0)), tmp_path, clock=lambda: now[0])
    first = orgs.credentials("chrts")

    def works(creds: Any) -> bool:
        client = redis.Redis.from_url(creds.url)
        try:
            return client.set(creds.prefix + "k", "v") is True
        except redis.AuthenticationError:
            return False
        finally:
            client.close()

    assert works(first)
    now[0] += 3600  # the next period: a new password, the previous one still valid
    second = orgs.credentials("chrts")
    assert second.password != first.password and works(second) and works(first)
    now[0] += 3600  # two periods on: the first is removed at the next sync
    assert orgs.sync({"chrts"}) is not None
    assert works(orgs.credentials("chrts")) and works(second) and not works(first)
    assert len(platform.server.acl_getuser(orgs.user("chrts"))["passwords"]) == 2
    # Another scheduler (its own state_dir, its own secret) adds its passwords beside ours.
    other = OrganisationRedis(RedisSettings(**platform.settings(rotate=3600.0)), tmp_path / "other",
                              clock=lambda: now[0])
    (tmp_path / "other").mkdir()
    theirs = other.credentials("chrts")
    assert theirs.password != second.password and works(theirs) and works(orgs.credentials("chrts"))
    # The secret stays in the state_dir, readable by the scheduler only.
    assert (tmp_path / "redis-secret").stat().st_mode & 0o777 == 0o600
    orgs.close()
    other.close()


def test_credentials_read_at_a_period_boundary_still_work(tmp_path: Path, platform: Platform) -> None:
    """The clock is read once per hand-out: a boundary crossed between setting the user up and
    deriving the password must not hand out a password the server does not know yet."""
    import redis

    now = [3600.0 * 1000 + 3599.999]  # the last moment of a period
    ticks = iter([0.0, 0.0, 0.002])  # the third reading of the clock is in the next period

    def clock() -> float:
        now[0] += next(ticks, 0.0)
        return now[0]

    orgs = OrganisationRedis(RedisSettings(**platform.settings(rotate=3600.0)), tmp_path, clock=clock)
    creds = orgs.credentials("chrts")
    client = redis.Redis.from_url(creds.url)
    try:
        assert client.set(creds.prefix + "k", "v") is True  # AuthenticationError if the password is unknown
    finally:
        client.close()
        orgs.close()


def test_an_unreachable_server_is_one_problem_and_no_user_is_tried(tmp_path: Path, platform: Platform) -> None:
    """Whether the server can be used is decided by what failed, not by the words of a message."""
    orgs = OrganisationRedis(RedisSettings(**platform.settings(url="redis://127.0.0.1:1/0")), tmp_path)
    problems = orgs.sync({"chrts", "sesr"})
    assert len(problems) == 1 and "cannot use the Redis at 127.0.0.1:1" in problems[0].message
    orgs.close()


def test_the_server_check_names_an_open_default_user_and_a_wrong_password(tmp_path: Path, platform: Platform,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    orgs = OrganisationRedis(RedisSettings(**platform.settings()), tmp_path)
    open_default = "nopass" in platform.server.acl_getuser("default")["flags"]
    messages = [p.message for p in orgs.check_server()]
    assert any("lets anyone in as its 'default' user" in m for m in messages) == open_default
    orgs.close()
    monkeypatch.setenv(ADMIN_ENV, "not-the-password")
    wrong = OrganisationRedis(RedisSettings(**platform.settings()), tmp_path)
    [problem] = wrong.sync({"chrts"})
    assert "cannot use the Redis at 127.0.0.1:6379" in problem.message and ADMIN_ENV in problem.message
    assert "not-the-password" not in problem.message


def test_settings_refuse_a_rotation_shorter_than_a_run_and_the_admin_variable_in_task_env(tmp_path: Path) -> None:
    from peach_tasks.errors import PeachError

    base = {"url": "redis://127.0.0.1:6379"}
    config = write_settings(tmp_path, [], redis={**base, "rotate": "30s"})
    with pytest.raises(PeachError, match="must be at least timeouts.task"):
        load_settings(config)  # the test settings give tasks 60 s
    config = write_settings(tmp_path, [], redis={**base}, task_env={ADMIN_ENV: "x"})
    with pytest.raises(PeachError, match="must not set PEACH_REDIS_ADMIN_PASSWORD"):
        load_settings(config)
    config = write_settings(tmp_path, [], redis={"url": "redis://user:pw@127.0.0.1:6379"})
    with pytest.raises(PeachError, match="redis.url"):
        load_settings(config)


def test_without_redis_nothing_changes(tmp_path: Path, open_scheduler: Any) -> None:
    repo = Repo(tmp_path / "plain")
    repo.notebook("nb.ipynb", "import os\ndef main():\n    return sorted(k for k in os.environ if 'REDIS' in k)\n")
    repo.write("peach.yaml", "codops: chrts\ntasks:\n  t: {notebook: nb.ipynb, method: main, executor: python}\n")
    repo.commit()
    scheduler, store = open_scheduler(write_settings(tmp_path, [{"url": str(repo.path)}]))
    scheduler.run_once()
    assert scheduler.redis is None and store.runs("chrts", "t")[0]["result"] == []
    assert not (scheduler.state_dir / "redis-secret").exists()


NO_NETWORK = """\
import os, socket
import redis

def main():
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=3).close()
        tcp = "reached"
    except OSError as exc:
        tcp = type(exc).__name__
    url, prefix = os.environ["PEACH_REDIS_URL"], os.environ["PEACH_REDIS_PREFIX"]
    r = redis.Redis.from_url(url, decode_responses=True)
    r.set(prefix + "weights", "[1, 2]")
    try:
        r.get(prefix.replace(":chrts:", ":sesr:") + "secret")
        other = "ALLOWED"
    except redis.exceptions.NoPermissionError:
        other = "NOPERM"
    return {"tcp": tcp, "scheme": url.split(":")[0], "weights": r.get(prefix + "weights"), "other": other}
"""


@pytest.mark.slow
def test_a_run_without_a_network_reaches_only_redis_through_the_bridge(tmp_path: Path, platform: Platform,
                                                                        open_scheduler: Any) -> None:
    repo = Repo(tmp_path / "closed")
    repo.notebook("nb.ipynb", NO_NETWORK)
    repo.write("peach.yaml", "codops: chrts\ndependencies: [redis]\ntasks:\n"
                             "  t: {notebook: nb.ipynb, method: main, executor: python}\n")
    repo.commit()
    config = write_settings(tmp_path, [{"url": str(repo.path)}], redis=platform.settings(),
                            python={"network": False})
    scheduler, store = open_scheduler(config)
    scheduler.run_once()
    if scheduler.sandbox is None:
        require_service("no sandbox on this host: a run without a network needs bubblewrap")
    run = store.runs("chrts", "t", limit=1)[0]
    assert run["status"] == "SUCCESS", store.log(run["id"])
    # Its own loopback has no Redis; the bridge has, with the organisation's user only.
    assert run["result"] == {"tcp": "ConnectionRefusedError", "scheme": "unix", "weights": "[1, 2]",
                             "other": "NOPERM"}
    assert platform.server.get(f"{platform.key_prefix}chrts:weights") == "[1, 2]"
    scheduler.close()
    assert scheduler.redis is not None and scheduler.redis._bridges == {}  # closed with the scheduler


def test_the_bridge_carries_large_values_and_many_connections_within_its_bound(
        tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import redis

    from peach_tasks.executors import redis_bridge

    bridge = redis_bridge.RedisBridge(tmp_path / "r.sock", *REDIS).start()
    try:
        admin = f"unix://{platform.admin_user}:{platform.admin_password}@{bridge.path}"
        client = redis.Redis.from_url(admin)
        big = b"w" * (5 << 20)  # more than the bridge's buffer: it must flow, not pile up
        client.set(f"{platform.key_prefix}big", big)
        assert client.get(f"{platform.key_prefix}big") == big
        errors: list[BaseException] = []

        def ping(n: int) -> None:
            try:
                c = redis.Redis.from_url(admin)
                for _ in range(20):
                    assert c.incr(f"{platform.key_prefix}count") > 0
                c.close()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=ping, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and client.get(f"{platform.key_prefix}count") == b"320"
        monkeypatch.setattr(redis_bridge, "MAX_CONNECTIONS", bridge.connections)  # full now
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(admin, socket_timeout=5).ping()
        client.close()
    finally:
        bridge.close()
    assert not bridge.path.exists()


def test_each_organisation_has_its_own_bridge_and_one_filling_it_leaves_the_others_theirs(
        tmp_path: Path, platform: Platform, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Found by the hostile pass: one bridge served every organisation, so a run holding 400
    connections cut the others' runs off Redis, and each refused connection was a line in the
    scheduler's log. Each organisation now has a socket of its own (the only one its runs see),
    with its own bound; refusals are said once a minute."""
    import redis

    from peach_tasks.executors import redis_bridge

    monkeypatch.setattr(redis_bridge, "MAX_CONNECTIONS", 4)
    orgs = OrganisationRedis(RedisSettings(**platform.settings()), tmp_path)
    try:
        hog, other = orgs.bridge("hog"), orgs.bridge("other")
        assert hog != other and orgs.bridge("hog") == hog and hog.parent == other.parent
        admin = f"{platform.admin_user}:{platform.admin_password}"
        held = []
        for _ in range(40):  # far more than the bound: the rest are refused
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(hog))
            held.append(sock)
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(f"unix://{admin}@{hog}", socket_timeout=5).ping()
        assert redis.Redis.from_url(f"unix://{admin}@{other}", socket_timeout=5).ping() is True
        said = [r for r in caplog.records if "connections already open" in r.getMessage()]
        assert len(said) == 1 and "hog" in said[0].getMessage(), [r.getMessage() for r in said]
        for sock in held:
            sock.close()
    finally:
        orgs.close()
    assert not hog.exists() and not other.exists()
