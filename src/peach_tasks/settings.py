"""``scheduler.yaml`` -> ``Settings``. Every default lives here, in one place.

The file is found from ``--config``, else ``$PEACH_TASKS_CONFIG``, else
``./scheduler.yaml``. Relative paths inside it (``state_dir``, a repository ``url``
that is a local path, a SQLite ``database`` path) are relative to the file itself, so
the scheduler behaves the same whichever directory it is started from.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .alert_settings import AlertSettings, Duration
from .durations import parse_duration
from .errors import ConfigProblem, PeachError
from .hosts import host_setting, origin_setting
from .model import METADATA_LOOP, TaskSpec
from .sources.repos import name_problem
from .sources.yamlsource import load_yaml_file, validation_problems

CONFIG_ENV = "PEACH_TASKS_CONFIG"
DATABASE_ENV = "PEACH_TASKS_DATABASE_URL"
DEFAULT_CONFIG = "scheduler.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RepositorySettings(_Strict):
    url: str = Field(min_length=1)
    branch: str = Field(default="master", min_length=1)
    # Organisations this repository may define tasks for; None = any.
    codops: list[str] | None = None
    # Short name used in folders and messages; derived from the url when absent.
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str | None) -> str | None:
        problem = None if value is None else name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class TimeoutSettings(_Strict):
    task: float = Field(default=3600.0, gt=0)
    metadata: float = Field(default=300.0, gt=0)
    # Seconds between SIGTERM and SIGKILL when a task's process tree is ended.
    kill_grace: float = Field(default=10.0, ge=0)


class LoopSettings(_Strict):
    min_iteration_seconds: float = Field(default=0.0, ge=0)
    sync_interval_seconds: float = Field(default=30.0, ge=0)
    # The sandbox started ahead for a loop's next task imports that task's modules of its
    # environment while it waits (executors/preload.py); false: the run imports them itself.
    preload_imports: bool = True


class WebSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    # With no tokens, serving on a non-loopback address is refused unless this is true.
    allow_public: bool = False
    # Host names (Host header) answered besides loopback ones and ``host``; "*": any. Kept
    # lowercased, without brackets, a final dot or a port.
    allowed_hosts: list[Annotated[str, AfterValidator(host_setting)]] = Field(default_factory=list)
    # Origins (scheme://host[:port]) whose pages may write (POST) besides the server's own.
    allowed_origins: list[Annotated[str, AfterValidator(origin_setting)]] = Field(default_factory=list)
    # Where people reach the dashboard (https://peach.example.com); alerts link to runs there.
    # Default: http://<host>:<port>.
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+(/\S*)?$")

    def dashboard_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


class TokenSettings(_Strict):
    """One bearer token of the web API and the organisations it may see (``*``: all)."""

    token: str | None = Field(default=None, min_length=16)
    # Name of an environment variable holding the token, to keep it out of the file.
    token_env: str | None = Field(default=None, min_length=1)
    codops: list[str] = Field(min_length=1)

    # Checked on token_env, not on the whole entry, so the error never echoes the token.
    @field_validator("token_env")
    @classmethod
    def _not_both(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("token") is not None:
            raise ValueError("give either 'token' or 'token_env', not both")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "TokenSettings":
        if self.token is None and self.token_env is None:
            raise ValueError("give 'token' or 'token_env' (the name of an environment variable holding it)")
        return self


ConfValue = str | int | float | bool


class ReplicaSettings(_Strict):
    """Several ``serve`` processes on one database share the loops through leases."""

    # This replica's identity; default <host>:<hash of state_dir>, stable across restarts.
    name: str | None = Field(default=None, min_length=1)
    # A replica that dies is replaced within this many seconds.
    lease_seconds: float = Field(default=30.0, ge=1)


class SparkOrganisationSettings(_Strict):
    """Per-organisation Spark resources. The queue defaults to the codops itself."""

    queue: str | None = Field(default=None, min_length=1)
    num_executors: int | None = Field(default=None, ge=1)
    executor_cores: int | None = Field(default=None, ge=1)
    executor_memory: str | None = Field(default=None, pattern=r"^[0-9]+[kmgtKMGT]?$")
    driver_memory: str | None = Field(default=None, pattern=r"^[0-9]+[kmgtKMGT]?$")
    conf: dict[str, ConfValue] = Field(default_factory=dict)


_SIZE = r"^(?P<number>[0-9]+(\.[0-9]+)?)\s*(?P<unit>[kKmMgGtT]i?)?[bB]?$"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size_bytes(text: str) -> int:
    """``"4G"``, ``"256M"``, ``"512Mi"``, ``"1.5GB"`` -> bytes (binary units, as Docker reads
    a bare ``G``); a plain number is bytes."""
    match = re.match(_SIZE, text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size; write e.g. 512M or 4G")
    unit = (match["unit"] or "")[:1].lower()
    return int(float(match["number"]) * _UNITS[unit])


def _absolute_mounts(value: dict[str, str]) -> dict[str, str]:
    for path in value:
        if not os.path.isabs(path) or ".." in Path(path).parts:
            raise ValueError(f"mount {path!r} must be an absolute path without '..'")
    return value


# Host folders a run sees at the same path, "ro" or "rw".
Mounts = Annotated[dict[str, Literal["ro", "rw"]], AfterValidator(_absolute_mounts)]


class PythonLimits(_Strict):
    """What one run of an organisation's python task (or Spark driver) may use, enforced by
    the kernel through the run's cgroup. ``None`` leaves that resource unlimited."""

    memory: str | None = Field(default="4G", pattern=_SIZE)
    cpus: float | None = Field(default=2.0, gt=0)
    pids: int | None = Field(default=1024, ge=8)
    # What a run may hold in its folders on the scheduler's disk (its run folder: request,
    # result, outputs; its trigger folder), watched while it runs: they are the only ones
    # there it can write (its working folder, /tmp and HOME are in memory).
    disk: str | None = Field(default="1G", pattern=_SIZE)
    network: bool = True
    # Under a root scheduler each organisation's runs have a uid of their own (executors/
    # sandbox.py user_for); false: all run as 65534 (nobody), as before.
    user_per_organisation: bool = True
    # Host folders a run sees at the same path, "ro" or "rw" (shared data, a model store);
    # nothing else of the host is shown. The task's user must be allowed to write a "rw" one.
    mounts: Mounts = Field(default_factory=dict)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else size_bytes(self.memory)

    @property
    def disk_bytes(self) -> int | None:
        return None if self.disk is None else size_bytes(self.disk)


MAX_OUTPUT_BYTES = 256 << 20


class OutputSettings(_Strict):
    """How much of what a run shows (``display()``, figures) is kept with it."""

    max_count: int = Field(default=100, ge=0, le=10_000)
    max_bytes: str = Field(default="10M", pattern=_SIZE)  # all of one run's outputs together

    @field_validator("max_bytes")
    @classmethod
    def _storable(cls, value: str) -> str:
        if size_bytes(value) > MAX_OUTPUT_BYTES:
            raise ValueError(f"at most {MAX_OUTPUT_BYTES >> 20}M: a run's outputs are one store transaction")
        return value

    @property
    def max_bytes_value(self) -> int:
        return size_bytes(self.max_bytes)


class OrganisationPythonSettings(_Strict):
    """One organisation's overrides of the ``python:`` defaults; what is absent is inherited."""

    memory: str | None = Field(default=None, pattern=_SIZE)
    cpus: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, ge=8)
    disk: str | None = Field(default=None, pattern=_SIZE)
    network: bool | None = None
    mounts: Mounts | None = None  # added to the defaults' mounts


class OrganisationSettings(_Strict):
    spark: SparkOrganisationSettings = Field(default_factory=SparkOrganisationSettings)
    python: OrganisationPythonSettings = Field(default_factory=OrganisationPythonSettings)
    # Default freshness of the tasks in this organisation's loop (overrides freshness.organisations).
    freshness: Duration | None = None


class FreshnessSettings(_Strict):
    """How fresh a task's last success must be when its definition says nothing
    (``freshness:`` in peach.yaml wins). None: tasks are never stale by default."""

    organisations: Duration | None = None  # tasks of the organisations' loops
    metadata: Duration | None = None  # tasks of the shared metadata loop


class SparkSettings(_Strict):
    # local[*] (embedded), spark://host:7077 (standalone), yarn, k8s://https://...
    master: str = Field(default="local[*]", min_length=1)
    conf: dict[str, ConfValue] = Field(default_factory=dict)
    # spark-submit to use; default $SPARK_HOME/bin/spark-submit, else the pyspark package's.
    submit: str | None = None
    # A standalone master's web UI (for its JSON and the kill of orphaned applications);
    # default: http://<master host>:8080 for a spark:// master.
    master_web_url: str | None = None


class GitLabSettings(_Strict):
    """A GitLab server whose projects carrying ``topic`` join the repositories at each sync."""

    url: str = Field(min_length=1)  # the server, e.g. https://gitlab.example.com
    # Environment variable holding the token (scopes read_api and read_repository),
    # so that the token itself is never written in this file.
    token_env: str = Field(default="PEACH_GITLAB_TOKEN", min_length=1)
    groups: list[str] = Field(default_factory=list)  # paths or ids, subgroups included; none: all visible
    topic: str = Field(default="peach-lab", min_length=1)
    branch: str | None = Field(default=None, min_length=1)  # None: each project's default branch
    codops: list[str] | None = None  # organisations its projects may define tasks for; None = any
    clone: Literal["http", "ssh"] = "http"  # which of the project's clone URLs to fetch
    name: str = Field(default="gitlab", pattern=r"^[A-Za-z0-9_.-]+$")  # in messages and folders
    timeout: float = Field(default=30.0, gt=0)  # seconds per API request


class RedisSettings(_Strict):
    """The platform's Redis (>= 6): each organisation gets an ACL user of its own, limited to
    the keys and channels ``<key_prefix><codops>:*`` (org_redis.py, docs/settings.md)."""

    # Where the scheduler, the API and tasks reach it; no credentials in it (admin_* below).
    url: str = Field(pattern=r"^rediss?://[^/@\s]+(/[0-9]{1,2})?$")
    # The ACL user that may create users (ACL SETUSER) and count keys (SCAN, MEMORY USAGE);
    # its password comes from the environment variable named here, never from this file.
    admin_user: str = Field(default="default", min_length=1)
    admin_password_env: str | None = Field(default="PEACH_REDIS_ADMIN_PASSWORD", min_length=1)
    # Each organisation's user is '<user_prefix><codops>'; its keys and channels start with
    # '<key_prefix><codops>:'.
    user_prefix: str = Field(default="peach-", pattern=r"^[A-Za-z0-9_.:-]*$")
    key_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_.:-]*$")
    # An organisation's password changes this often; the previous one stays valid one more
    # period, so a period must outlast the longest run (checked against timeouts.task).
    rotate: Duration = 24 * 3600.0
    # How many keys the API's per-organisation figures look at, at most (SCAN is bounded).
    max_scan_keys: int = Field(default=100_000, ge=100)


class RetentionSettings(_Strict):
    """How long runs and their logs are kept (store/retention.py); per task, the newest
    ``keep_last`` runs and their logs always stay."""

    runs_days: float | None = Field(default=90.0, gt=0)  # null: runs are never removed
    logs_days: float | None = Field(default=30.0, gt=0)  # null: logs stay as long as their runs
    keep_last: int = Field(default=100, ge=1)
    # Pruning works in the background, one short transaction per batch of at most this many runs.
    batch: int = Field(default=200, ge=1, le=5000)
    # Between two batches: the loops' writes go first. Long enough that the pruner's writes
    # (and SQLite's checkpoints of them) stay a small share of the disk's time: with 50ms, a
    # loop's store call waited up to ~180 ms at times while 1,000,000 runs were pruned; with
    # 250ms it stays within bench/prune.py's target, at ~700 removed runs a second.
    pause: Annotated[float, BeforeValidator(parse_duration)] = Field(default=0.25, ge=0, le=60)
    # Between two rounds over every task.
    every: Annotated[float, BeforeValidator(parse_duration)] = Field(default=600.0, ge=1)


class Settings(_Strict):
    database: str | None = None
    state_dir: str = "peach-state"
    repositories: list[RepositorySettings] = Field(default_factory=list)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    tokens: list[TokenSettings] = Field(default_factory=list)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    replica: ReplicaSettings = Field(default_factory=ReplicaSettings)
    organisations: dict[str, OrganisationSettings] = Field(default_factory=dict)
    # GitLab servers to discover repositories on (one mapping, or a list of them).
    gitlab: list[GitLabSettings] = Field(default_factory=list)
    # Extra environment variables given to every task process (the scheduler's own
    # environment is not passed on, so secrets such as the database URL stay out).
    task_env: dict[str, str] = Field(default_factory=dict)
    # Every run in its own bubblewrap sandbox and cgroup (docs/security.md); "none" runs
    # tasks as plain processes of the scheduler's user, for hosts without bubblewrap.
    isolation: Literal["sandbox", "none"] = "sandbox"
    # Resource limits of every organisation's runs; organisations.<codops>.python overrides.
    python: PythonLimits = Field(default_factory=PythonLimits)
    # What a run shows (display(), matplotlib figures) is kept with it, within these bounds.
    outputs: OutputSettings = Field(default_factory=OutputSettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Old runs and logs removed in the background; absent: everything is kept.
    retention: RetentionSettings | None = None
    freshness: FreshnessSettings = Field(default_factory=FreshnessSettings)
    # Rules that send alerts, where to, and what organisations' own rules may use (alerts.md).
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    # The platform's Redis, shared by organisations each in a namespace of its own; None: none.
    redis: RedisSettings | None = None
    # Each sync logs into a PostgreSQL of this host (127.0.0.1:5432) as a task with the network
    # could, and reports a problem when it gets in without a password (store/exposure.py); the
    # store's own server on loopback is probed either way. False: a host known to need no check.
    check_local_database: bool = True

    # Set by load_settings, not by the file: the folder relative paths start from.
    base_dir: str = Field(default=".", exclude=True)

    @field_validator("gitlab", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, dict) else value  # `gitlab: {url: ...}` is one source

    @field_validator("gitlab")
    @classmethod
    def _distinct_sources(cls, value: list[GitLabSettings]) -> list[GitLabSettings]:
        names = [source.name for source in value]
        if len(set(names)) != len(names):
            raise ValueError("two gitlab sources have the same 'name'; give each its own")
        return value

    @model_validator(mode="after")
    def _redis_fits(self) -> "Settings":
        redis = self.redis
        if redis is None:
            return self
        if redis.rotate < self.timeouts.task:
            raise ValueError(f"redis.rotate ({redis.rotate:g} s) must be at least timeouts.task "
                             f"({self.timeouts.task:g} s): a run's Redis password must outlast the run")
        if redis.admin_password_env and redis.admin_password_env in self.task_env:
            raise ValueError(f"task_env must not set {redis.admin_password_env}, the Redis admin password's "
                             "variable: tasks get their organisation's own credentials (PEACH_REDIS_URL)")
        return self

    def limits_for(self, codops: str) -> PythonLimits:
        """The ``python:`` defaults with the organisation's own overrides applied."""
        own = self.organisations.get(codops)
        if own is None:
            return self.python
        changed = {k: v for k, v in own.python.model_dump().items() if v is not None}
        if "mounts" in changed:
            changed["mounts"] = {**self.python.mounts, **changed["mounts"]}
        return self.python.model_copy(update=changed) if changed else self.python

    def freshness_for(self, spec: TaskSpec) -> float | None:
        """A task's freshness in seconds: its own, else its loop's default; None: none."""
        if spec.freshness is not None:
            return spec.freshness or None  # 0: `freshness: false`, none whatever the default
        if spec.loop_name == METADATA_LOOP:
            return self.freshness.metadata
        own = self.organisations.get(spec.codops)
        if own is not None and own.freshness is not None:
            return own.freshness
        return self.freshness.organisations

    @property
    def state_path(self) -> Path:
        return (Path(self.base_dir) / self.state_dir).resolve()

    @property
    def database_url(self) -> str:
        """``$PEACH_TASKS_DATABASE_URL`` wins, then ``database``, then SQLite in state_dir."""
        url = os.environ.get(DATABASE_ENV) or self.database
        if not url:
            return f"sqlite:///{self.state_path / 'peach.db'}"
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
            return prefix + str((Path(self.base_dir) / url[len(prefix):]).resolve())
        return url

    def repository_url(self, repo: RepositorySettings) -> str:
        """A local relative path is made absolute against the settings file's folder."""
        url = repo.url
        if _is_remote(url) or os.path.isabs(url):
            return url
        return str((Path(self.base_dir) / url).resolve())

    def repository_name(self, repo: RepositorySettings) -> str:
        if repo.name:
            return repo.name
        tail = repo.url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        tail = tail[:-4] if tail.endswith(".git") else tail
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", tail) or "repo"


def _is_remote(url: str) -> bool:
    # scheme://..., file:..., or scp-like user@host:path
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url)) or bool(re.match(r"^[^/]+@[^/]+:", url))


class SettingsError(PeachError):
    """The settings file cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    """Read and check the settings file; raise ``SettingsError`` listing every problem."""
    path = config_path(explicit)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError([ConfigProblem(shown, None, "settings file not found; create it or pass --config")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError([ConfigProblem(shown, None, f"cannot read the settings file ({exc})")]) from None
    try:
        data, lines = load_yaml_file(text, shown)
    except ConfigProblem as exc:
        raise SettingsError([exc]) from None
    problems = [
        ConfigProblem(shown, line, f"key '{'.'.join(map(str, key))}' is given twice; keep one")
        for key, line in lines.duplicates
    ]
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problems.append(ConfigProblem(shown, 1, "the settings file must be a mapping of keys to values"))
        raise SettingsError(problems)
    if "base_dir" in data:
        problems.append(ConfigProblem(shown, lines.line_of(("base_dir",)), "unknown key 'base_dir'; remove it"))
    try:
        settings = Settings.model_validate({**data, "base_dir": str(path.resolve().parent)})
    except ValidationError as exc:
        problems.extend(validation_problems(exc, shown, lines))
        raise SettingsError(problems) from None
    blocked = _state_dir_blocked(settings.state_path)
    if blocked is not None:
        problems.append(ConfigProblem(shown, lines.lines.get(("state_dir",)), blocked))
    names = [settings.repository_name(r) for r in settings.repositories]
    for index, name in enumerate(names):
        derived = name_problem(name) if settings.repositories[index].name is None else None
        if derived is not None:  # e.g. the url ends in '..'
            problems.append(ConfigProblem(shown, lines.line_of(("repositories", index)),
                                          f"{derived} (derived from 'url'); give this repository a 'name'"))
        if name in names[:index]:
            problems.append(ConfigProblem(shown, lines.line_of(("repositories", index)),
                                          f"two repositories are both named '{name}'; give one a distinct 'name'"))
    if problems:
        raise SettingsError(problems)
    return settings


def _state_dir_blocked(path: Path) -> str | None:
    """Why ``path`` cannot be the state_dir (it, or a folder above it, is a file), or None."""
    for folder in (path, *path.parents):
        if folder.is_dir():
            return None
        if os.path.lexists(folder):
            what = "is a file" if folder == path else f"lies under {folder}, which is a file"
            return (f"state_dir {path} {what}, not a folder; point 'state_dir' at a folder (it is created "
                    "if missing) or move that file away")
    return None


def settings_from_dict(data: dict, base_dir: str | os.PathLike[str] = ".") -> Settings:
    """Build settings in code (tests, the demo) with the same checks as the file."""
    return Settings.model_validate({**data, "base_dir": str(Path(base_dir).resolve())})
