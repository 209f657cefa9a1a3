"""``peach-tasks demo``: a git repository of example notebooks and a scheduler.yaml.

The repository is a normal working copy (``DIR/algos``) so a user can edit a notebook,
commit, and watch the next iteration run the new version.
"""

from __future__ import annotations

import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .notebooks import NOTEBOOKS, PEACH_CONF

SCHEDULER_YAML = """\
# peach-tasks demo settings; every key is described in docs/settings.md
state_dir: state
repositories:
  - url: algos
    branch: master
timeouts: {{task: 600, metadata: 60, kill_grace: 5}}
loop: {{min_iteration_seconds: 5, sync_interval_seconds: 10}}
web: {{host: 127.0.0.1, port: {port}}}
task_env:
  DEMO_OUTPUT: {output}
# Every run is sandboxed (docs/security.md): it sees only what it is shown. The demo's tasks
# write their results to one shared folder; a real platform would give each organisation
# its own (organisations.<codops>.python.mounts).
python:
  mounts: {{{output}: rw}}
"""


LOCAL_REDIS = "redis://127.0.0.1:6379/0"
# Where the demo's Redis admin password is read from (the demo sets it in its own process).
DEMO_PASSWORD_ENV = "PEACH_DEMO_REDIS_PASSWORD"
WEIGHTS_KEY = "default:iris:weights"


@dataclass(frozen=True)
class DemoRedis:
    """The Redis the demo stores the trained weights in: where, and as whom."""

    url: str  # without credentials, as scheduler.yaml takes it
    admin_user: str
    password: str | None

    def settings(self) -> str:
        env = DEMO_PASSWORD_ENV if self.password else "null"
        return (f"# Each organisation's Redis user and namespace (docs/settings.md#redis-each-organisations-redis)\n"
                f"redis:\n  url: {self.url}\n  admin_user: {self.admin_user}\n  admin_password_env: {env}\n"
                f"  user_prefix: peach-demo-\n")

    def read_back(self) -> str:
        """The redis-cli line that reads the weights back (as the admin user)."""
        parts = urlsplit(self.url)
        user = "" if self.admin_user == "default" and not self.password else f"{self.admin_user}@"
        ask = " --askpass" if self.password else ""
        return f"redis-cli -u {parts.scheme}://{user}{parts.netloc}{parts.path or '/0'}{ask} GET {WEIGHTS_KEY}"


def find_redis(url: str | None) -> DemoRedis | None:
    """``url`` (``--redis``; it may carry ``user:password@``) when it answers, else the local
    server when one answers on 127.0.0.1:6379, else None (the demo then writes a file)."""
    import redis

    given = url or LOCAL_REDIS
    parts = urlsplit(given)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"--redis {given!r} is not a redis:// URL, e.g. redis://127.0.0.1:6379/0")
    user = unquote(parts.username) if parts.username else "default"
    password = unquote(parts.password) if parts.password else None
    path = parts.path if parts.path not in ("", "/") else "/0"
    plain = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{path}"
    client = redis.Redis.from_url(plain, username=user if password else None, password=password,
                                  socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        if url:  # asked for: say why it cannot be used
            raise ValueError(f"the Redis at {plain} cannot be used ({exc})") from None
        return None
    finally:
        client.close()
    return DemoRedis(plain, user, password)


def notebook_json(cells: list[tuple[str, str]]) -> str:
    """A minimal nbformat-4 notebook from (cell_type, source) pairs."""
    out = []
    for index, (kind, source) in enumerate(cells):
        # nbformat 4.5 requires a unique id on every cell
        cell: dict = {"id": f"cell-{index}", "cell_type": kind, "metadata": {}, "source": source}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    nb = {"cells": out, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                    "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(nb, indent=1) + "\n"


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _web_port(preferred: int = 8765) -> int:
    """The usual dashboard port, or a free one when something already listens there."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def create_demo(directory: Path, redis: DemoRedis | None = None) -> Path:
    """Create (or reuse) the demo in ``directory``; returns the scheduler.yaml path. With
    ``redis``, the settings give each organisation its Redis user (a demo made before keeps
    its settings)."""
    directory = directory.resolve()
    config = directory / "scheduler.yaml"
    if config.exists():
        return config
    repo = directory / "algos"
    (repo / "peach.conf").mkdir(parents=True, exist_ok=True)
    output = directory / "output"
    output.mkdir(exist_ok=True)
    output.chmod(0o777)  # sandboxed tasks of a root scheduler run as an unprivileged user
    for name, cells in NOTEBOOKS.items():
        (repo / name).write_text(notebook_json(cells))
    for name, text in PEACH_CONF.items():
        (repo / "peach.conf" / name).write_text(text)
    _git(repo, "init", "--quiet", "--initial-branch=master")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=peach demo", "-c", "user.email=demo@peach.invalid",
         "commit", "--quiet", "-m", "Demo notebooks and task definitions")
    text = SCHEDULER_YAML.format(output=json.dumps(str(output)), port=_web_port())
    config.write_text(text + (redis.settings() if redis is not None else ""))
    return config
