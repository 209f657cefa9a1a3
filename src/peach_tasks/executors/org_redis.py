"""Each organisation's Redis: its own ACL user, limited to its own namespace.

With ``redis:`` in scheduler.yaml the scheduler keeps, for every organisation with tasks, an
ACL user ``<user_prefix><codops>`` on the platform's Redis (>= 6) that may touch only the keys
and Pub/Sub channels ``<key_prefix><codops>:*`` and run only the data commands below; the
server itself refuses everything else (NOPERM). Each run gets ``PEACH_REDIS_URL`` (that user
and its current password) and ``PEACH_REDIS_PREFIX``; the admin credentials stay in the
scheduler.

Passwords are derived, not stored: HMAC-SHA256 of ``<codops>:<period>`` under a random secret
kept in ``state_dir/redis-secret`` (mode 0600, out of every sandbox's sight), where the period
is the current ``redis.rotate`` interval. The user accepts the current and the previous
period's password, so a password handed to a run stays valid for at least one full period
(``rotate`` >= ``timeouts.task``, checked with the settings); older ones are removed at the
next sync. Each scheduler adds and removes only the passwords of its own secret, so replicas
with separate state_dirs share one Redis without undoing each other's.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from ..errors import PeachError, Problem
from .redis_bridge import RedisBridge

if TYPE_CHECKING:
    from ..settings import RedisSettings

log = logging.getLogger(__name__)

URL_ENV = "PEACH_REDIS_URL"
PREFIX_ENV = "PEACH_REDIS_PREFIX"
SECRET_FILE = "redis-secret"
PROBLEM_KIND = "redis"
# Periods back whose passwords a scheduler still looks for to remove (after a long stop).
_FORGET_PERIODS = 30

# What an organisation's user may run. Data commands on its own keys (strings, hashes, lists,
# sets, sorted sets, streams, bitmaps, HyperLogLogs, geo: @read/@write), MULTI/EXEC, its own
# connection's commands, and Pub/Sub on its own channels (Redis >= 6.2). Then taken away:
# @dangerous (FLUSHALL, FLUSHDB, CONFIG, KEYS, DEBUG, ACL, MODULE, SHUTDOWN, MONITOR, INFO,
# CLIENT LIST/KILL, MIGRATE, SWAPDB, ...), @admin, and what would show or reach beyond the
# namespace although the key rules allow it: SCAN and RANDOMKEY list every key's name,
# DBSIZE counts them, SELECT opens other databases, scripts and functions (EVAL, FCALL, SCRIPT
# FLUSH/KILL) run code on the server. Everything else is refused by the server with NOPERM.
DATA_COMMANDS = ("-@all", "+@read", "+@write", "+@transaction", "+@connection")
DENIED_COMMANDS = ("-@dangerous", "-@admin", "-@scripting", "-scan", "-randomkey", "-dbsize", "-select", "-move",
                   "-sort")  # SORT ... BY/GET reads other keys on Redis 6; SORT_RO is checked by Redis 7
# What tells one organisation the names of another's keys and channels (found by the hostile
# pass): CLIENT TRACKING ... BCAST PREFIX other: pushes every key another writes, and PUBSUB
# CHANNELS / NUMSUB / SHARD* list and count others' channels. Redis 7 denies a subcommand;
# Redis 6 only the whole command, so CLIENT keeps just what client libraries send.
DENIED_SUBCOMMANDS = ("-client|tracking", "-client|caching", "-client|getredir", "-client|trackinginfo",
                      "-pubsub|channels", "-pubsub|numsub", "-pubsub|numpat", "-pubsub|shardchannels",
                      "-pubsub|shardnumsub")
DENIED_COMMANDS_REDIS_6 = ("-client", "+client|id", "+client|getname", "+client|setname", "-pubsub")


class RedisUnavailable(PeachError):
    """The platform's Redis cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Credentials:
    """What one run of an organisation gets."""

    user: str
    password: str
    url: str  # with the user and password in it
    prefix: str

    def env(self) -> dict[str, str]:
        return {URL_ENV: self.url, PREFIX_ENV: self.prefix}


def load_secret(state_dir: Path) -> bytes:
    """This scheduler's password secret: made once (0600), then read."""
    path = state_dir / SECRET_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_bytes().strip()
        if len(data) < 32:
            raise RedisUnavailable(f"{path} is damaged (shorter than 32 bytes); remove it and a new one is made "
                                   "(every organisation's Redis password then changes)") from None
        return data
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def bridge_socket(state_dir: Path, codops: str) -> Path:
    """Where this state_dir's bridge for ``codops`` listens: a short path (a unix socket's is
    at most 107 bytes), in a folder of the temporary directory that this user owns. One per
    organisation: a run sees only its own, so one that opens every connection it may stops
    its own organisation's runs only (the hostile pass cut another off a shared one)."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"peach-redis-{digest}"
    try:
        folder.mkdir(mode=0o755)
    except FileExistsError:
        info = folder.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise RedisUnavailable(f"{folder} exists and is not a folder of this user; remove it") from None
    return folder / f"{hashlib.sha256(codops.encode()).hexdigest()[:16]}.sock"


class OrganisationRedis:
    """The organisations' users on the platform's Redis; thread-safe (sync and loops)."""

    def __init__(self, settings: "RedisSettings", state_dir: Path, clock: Any = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.state_dir = state_dir
        self._secret_value: bytes | None = None  # read when a password is first needed (not by the API)
        name = settings.admin_password_env
        self._admin_password = os.environ.get(name) if name else None
        if name and self._admin_password is None:
            raise RedisUnavailable(f"redis.admin_password_env names ${name}, which is not set; set it to the "
                                   f"password of Redis user '{settings.admin_user}' (or set admin_password_env: "
                                   "null for a user without one)")
        parts = urlsplit(settings.url)
        self._scheme, self._where = parts.scheme, parts.netloc
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 6379  # the bridge's far end
        self._db = int(parts.path.strip("/") or 0)
        self._client: Any = None
        self._version: tuple[int, ...] | None = None
        self._ensured: dict[str, int] = {}  # codops -> the period its user was last set for
        self._lock = threading.Lock()
        self._bridges: dict[str, RedisBridge] = {}  # codops -> its runs' bridge, started on first use

    # -- names ------------------------------------------------------------------------------
    def user(self, codops: str) -> str:
        return f"{self.settings.user_prefix}{codops}"

    def namespace(self, codops: str) -> str:
        return f"{self.settings.key_prefix}{codops}:"

    def period(self) -> int:
        return int(self.clock() // self.settings.rotate)

    def password(self, codops: str, period: int) -> str:
        if self._secret_value is None:
            self._secret_value = load_secret(self.state_dir)
        return hmac.new(self._secret_value, f"{codops}:{period}".encode(), hashlib.sha256).hexdigest()

    # -- the admin connection -----------------------------------------------------------
    def admin(self) -> Any:
        """The admin client (made on first use); ``RedisUnavailable`` when it cannot be used."""
        if self._client is not None:
            return self._client
        import redis

        client = redis.Redis.from_url(self.settings.url, username=self.settings.admin_user,
                                      password=self._admin_password, socket_timeout=10, socket_connect_timeout=5,
                                      decode_responses=True)
        try:
            version = str(client.info("server").get("redis_version", "0"))
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot use the Redis at {self._where} as '{self.settings.admin_user}' "
                                   f"({type(exc).__name__}: {exc}); check redis.url, redis.admin_user and "
                                   f"${self.settings.admin_password_env}") from None
        numbers = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if numbers < (6, 0):
            raise RedisUnavailable(f"the Redis at {self._where} is version {version}; organisations' users need "
                                   "ACLs, Redis 6 or newer")
        self._version, self._client = numbers, client
        return client

    def check_server(self) -> list[Problem]:
        """What the platform team must know about the server: reachable and recent enough, and
        whether its default user lets anyone in (which would bypass the organisations' users)."""
        return self._server()[1]

    def _server(self) -> tuple[bool, list[Problem]]:
        """Whether organisations' users can be set up on the server at all, and its problems."""
        try:
            client = self.admin()
            default = client.acl_getuser("default") or {}
        except RedisUnavailable as exc:
            return False, [Problem(PROBLEM_KIND, "redis", str(exc))]
        except Exception as exc:  # noqa: BLE001 - e.g. the admin user may not read ACLs
            return False, [Problem(PROBLEM_KIND, "redis", f"cannot read the Redis ACLs as "
                                                          f"'{self.settings.admin_user}' ({exc}); give that user "
                                                          "the ACL commands")]
        flags = set(default.get("flags") or [])
        if "on" in flags and "nopass" in flags:  # usable, but the platform team must close that door
            return True, [Problem(PROBLEM_KIND, "redis",
                                  f"the Redis at {self._where} lets anyone in as its 'default' user without a "
                                  "password: a task could use it instead of its organisation's user and reach "
                                  "every namespace. Give it a password (requirepass) or turn it off "
                                  "(ACL SETUSER default off)")]
        return True, []

    # -- users -------------------------------------------------------------------------------
    def rules(self, codops: str) -> list[str]:
        """The user's permissions, set without touching its passwords (``reset*`` of keys,
        channels and commands only)."""
        namespace = self.namespace(codops)
        channels = ["resetchannels", f"&{namespace}*"] if self._version and self._version >= (6, 2) else []
        pubsub = ["+@pubsub"] if channels else ["-@pubsub"]
        leaks = DENIED_SUBCOMMANDS if self._version and self._version >= (7, 0) else DENIED_COMMANDS_REDIS_6
        return ["on", "resetkeys", f"~{namespace}*", *channels, *DATA_COMMANDS, *pubsub, *DENIED_COMMANDS, *leaks]

    def ensure_user(self, codops: str, period: int | None = None) -> None:
        """Give ``codops``'s user its rules and ``period``'s (default: this one's) and the previous
        period's passwords, and remove this scheduler's older ones. Idempotent; one round trip
        when nothing changed."""
        if period is None:
            period = self.period()
        with self._lock:
            client = self.admin()
            user = self.user(codops)
            wanted = {self.password(codops, p) for p in (period, period - 1)}
            old = {hashlib.sha256(self.password(codops, p).encode()).hexdigest()
                   for p in range(period - _FORGET_PERIODS, period - 1)}
            present = set((client.acl_getuser(user) or {}).get("passwords") or [])
            changes = [f">{p}" for p in sorted(wanted)
                       if hashlib.sha256(p.encode()).hexdigest() not in present]
            changes += [f"!{h}" for h in sorted(present & old)]
            if self._ensured.get(codops) == period and not changes:
                return
            # Keys, channels and commands are reset and given again; passwords are only added
            # or removed, so other replicas' and running tasks' stay valid.
            client.execute_command("ACL", "SETUSER", user, *self.rules(codops), *changes)
            self._ensured[codops] = period
            if changes:
                log.info("redis: user %s has this period's password (%d added, %d removed)", user,
                         len([c for c in changes if c.startswith(">")]), len([c for c in changes if c[0] == "!"]))

    def credentials(self, codops: str, bridge: Path | None = None) -> Credentials:
        """A run's credentials: the user (made or rotated now if the period changed since the
        last sync) with this period's password; through ``bridge`` (a unix socket) for a run
        without a network."""
        # One reading of the clock: at a period's boundary, a second one could hand out the next
        # period's password while the user was set up with this period's only.
        period = self.period()
        if self._ensured.get(codops) != period:
            self.ensure_user(codops, period)
        user, password = self.user(codops), self.password(codops, period)
        if bridge is not None:
            url = f"unix://{quote(user, safe='')}:{password}@{bridge}?db={self._db}"
        else:
            path = f"/{self._db}" if self._db else ""
            url = f"{self._scheme}://{quote(user, safe='')}:{password}@{self._where}{path}"
        return Credentials(user, password, url, self.namespace(codops))

    def bridge(self, codops: str) -> Path:
        """``codops``'s unix socket joined to the server (started on first use) for its runs
        without a network; ``RedisUnavailable`` for a TLS server, which a byte bridge cannot carry."""
        with self._lock:
            bridge = self._bridges.get(codops)
            if bridge is None:
                if self._scheme != "redis":
                    raise RedisUnavailable(f"a run without a network reaches Redis through a unix socket bridge, "
                                           f"which carries redis:// only, not {self._scheme}://; give such "
                                           "organisations the network (python.network: true)")
                bridge = RedisBridge(bridge_socket(self.state_dir, codops), self._host, self._port,
                                     name=codops).start()
                self._bridges[codops] = bridge
            return bridge.path

    def sync(self, organisations: set[str]) -> list[Problem]:
        """Every organisation's user up to date; the problems found (none: all is well)."""
        usable, problems = self._server()
        if not usable:
            return problems
        for codops in sorted(organisations):
            try:
                self.ensure_user(codops)
            except Exception as exc:  # noqa: BLE001 - one organisation's failure never stops the others
                problems.append(Problem(PROBLEM_KIND, "redis", f"cannot set up the Redis user of '{codops}' "
                                                               f"({type(exc).__name__}: {exc})"))
        return problems

    # -- what the API shows ------------------------------------------------------------------
    def usage(self, codops: str) -> dict[str, Any]:
        """How many keys ``codops``'s namespace holds and their memory (MEMORY USAGE), read-only
        and bounded: SCAN stops after ``max_scan_keys`` keys of the database have been looked
        at (``complete`` is then false and the figures are lower bounds). No values are read."""
        client = self.admin()
        namespace = self.namespace(codops)
        keys = memory = examined = 0
        cursor = 0
        batch = 1000
        started = time.monotonic()
        while True:
            cursor, found = client.scan(cursor=cursor, match=f"{namespace}*", count=batch)
            examined += batch
            if found:
                pipe = client.pipeline(transaction=False)
                for key in found:
                    pipe.memory_usage(key, samples=0)
                memory += sum(int(m or 0) for m in pipe.execute())
                keys += len(found)
            if cursor == 0 or examined >= self.settings.max_scan_keys:
                break
        return {"codops": codops, "namespace": namespace, "user": self.user(codops), "keys": keys,
                "memory_bytes": memory, "complete": cursor == 0, "scan_seconds": round(time.monotonic() - started, 4)}

    def close(self) -> None:
        for bridge in self._bridges.values():
            bridge.close()
        self._bridges = {}
        if self._client is not None:
            self._client.close()
            self._client = None
