"""Every run in its own bubblewrap sandbox: what a task may see, touch and signal.

A run sees the system read-only (``/usr``, ``/etc``, ``/opt``), the Python installation its
environment was made from, its organisation's environment read-only, a private copy of its
checkout at the usual path, a private ``/tmp`` and ``HOME``, its own trigger folder and the
executor's files for this run; nothing else of ``state_dir`` (no store, no other
environment or checkout, no ``scheduler.yaml``). It has its own PID, mount, IPC and UTS
namespaces: ``/proc`` shows only the sandbox, the scheduler cannot be seen or signalled,
and when the task ends the kernel ends everything else it started. ``network: false``
gives it a network namespace of its own (loopback only).

The sandbox is bubblewrap (``bwrap``), the one Flatpak uses. A scheduler running as root
starts it as root, so it can bind whatever the run needs, and the task drops to an
unprivileged user (``setpriv``: no capabilities, no new privileges) before any of its code
runs; a scheduler running as an ordinary user starts it in a user namespace of that user.
The launcher is a shell that first puts itself into the run's cgroup (``cgroups.py``), so
every process of the sandbox is born there.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from ..trees import walk_tree
from .cgroups import CgroupError, Cgroups, Limits, RunGroup, detect
from .seccomp_filter import filter_path

log = logging.getLogger(__name__)

HOSTNAME = "peach"  # the sandbox's own host name (its UTS namespace): the host's is not shown
SANDBOX_UID = SANDBOX_GID = 65534  # nobody/nogroup: a build's user, and a run's without an organisation
# Each organisation's runs have a user of their own under a root scheduler (``user_for``): the
# kernel keeps per user what no namespace separates (inotify instances, pipe buffers, keyrings,
# message queues), and a folder mounted for one organisation is then its own.
ORG_UID_BASE = 1_000_000_000
ORG_UID_RANGE = 1_000_000_000
CGROUP_BASE = "peach-tasks"
SYSTEM_READ_ONLY = (Path("/usr"), Path("/etc"), Path("/opt"))
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # symlinks into /usr, or folders
TASK_HOME = "/tmp/home"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # bootstrap.py and trigger_client.py live here

# Joins the run's cgroup(s), then becomes the sandbox: ``sh -c LAUNCH peach N file... argv...``.
# It writes 0, "this one": the shell's only thread (see ``RunGroup.procs_files``).
# The launcher joins the run's cgroups, then becomes bubblewrap; with a seccomp program (its
# first argument, a path) it opens it as fd 9 for bubblewrap's ``--seccomp 9``.
LAUNCH = ('f=$1; n=$2; shift 2; while [ "$n" -gt 0 ]; do echo 0 > "$1" || exit 125; shift; n=$((n-1)); done; '
          'if [ -n "$f" ]; then exec "$@" 9<"$f"; fi; exec "$@"')
SECCOMP_FD = "9"
# The sandbox's PID 1 (bubblewrap's --as-pid-1) runs the task as its child and ends with its
# status: its exit ends every other process of the sandbox, it reaps what the task orphans,
# and the task cannot signal it. It keeps the user bubblewrap started it as, so bubblewrap's
# parent-death signal (--die-with-parent) reaches it: a task's user could not be signalled
# by a root bubblewrap that dropped its capabilities. (bubblewrap's own init would leave its
# parent early, orphaning itself to the host's init, which may never reap it.)
INIT = '"$@"; exit $?'
# Then, as the task's user: fill the private checkout (if any), enter the notebook's folder.
# Plain ``cp -R``: the copy's files are the task's own and get the checkout's modes under the
# umask; -p could keep only the times (git leaves none worth keeping), at 5 more system
# calls per file (ownership twice, ACL twice, times): about 1 ms per 200 files.
TASK_STEP = 'if [ -n "$1" ]; then cp -R "$1" "$2" || exit 125; fi; cd "$3" || exit 125; shift 3; exec "$@"'
# The same for a program that waits for the copy itself (bootstrap.py, see ``command``): the
# copy runs beside the interpreter's start instead of before it. The program gets ``--copy
# PID DONE``: PID, the copy's job, is its child once the shell became it (unless the shell
# already reaped it: then it has ended), and the job leaves the file DONE if the copy is whole.
TASK_STEP_BESIDE = ('c=$2; { cp -R "$1" "$c" && : > "$c.copied"; } & shift 3; '
                    'exec "$@" --copy "$!" "$c.copied"')
PRISTINE = "/run/peach/checkout"  # where the committed checkout is shown, read-only, for TASK_STEP
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
                "bubblewrap), or set 'isolation: none' in scheduler.yaml to run tasks unsandboxed")


class SandboxUnavailable(Exception):
    """Runs cannot be sandboxed on this host; the message says why and what to do."""


def user_for(codops: str) -> tuple[int, int]:
    """The uid and gid of ``codops``' runs under a root scheduler: the same on every host and
    after every restart (CRC-32 of the name), far above the host's own users."""
    import zlib

    uid = ORG_UID_BASE + zlib.crc32(codops.encode("utf-8")) % ORG_UID_RANGE
    return uid, uid


@dataclass(frozen=True)
class SandboxPlan:
    """How one run is sandboxed: the loop makes it, the executor adds its own paths.

    ``writable`` pairs a host folder with where the run sees it (usually the same path);
    ``read_only`` folders are seen at their own path. ``private_copy`` is a folder (the
    run's checkout) the run sees at its own path in a copy of its own, on a tmpfs filled
    inside the sandbox, so what the task writes there counts against its memory limit and
    is gone with it, and never reaches the checkout other runs use. ``watched`` are the
    writable folders on the scheduler's disk that are the run's own (its trigger and run
    folders): while it runs they may hold at most ``limits.disk_bytes`` (run_process).
    """

    group_name: str
    limits: Limits
    network: bool = True
    read_only: tuple[Path, ...] = ()
    writable: tuple[tuple[Path, Path], ...] = ()
    private_copy: Path | None = None
    watched: tuple[Path, ...] = ()
    user: tuple[int, int] | None = None  # who the task runs as (user_for); None: the sandbox's run_as

    def with_paths(self, read_only: tuple[Path, ...] = (), writable: tuple[Path, ...] = (),
                   watched: tuple[Path, ...] = ()) -> "SandboxPlan":
        return replace(self, read_only=self.read_only + tuple(read_only),
                       writable=self.writable + tuple((p, p) for p in writable), watched=self.watched + watched)


@dataclass(frozen=True)
class Sandbox:
    """This host's sandboxing: bubblewrap for the namespaces, cgroups for the limits."""

    bwrap: str
    cgroups: Cgroups
    run_as: tuple[int, int] | None  # (uid, gid) the task drops to; None: the scheduler's own user
    setpriv: str | None = None
    seccomp: str | None = None  # the system calls refused in every sandbox (seccomp_filter.py)

    def create_group(self, plan: SandboxPlan) -> RunGroup:
        return self.cgroups.create(plan.group_name, plan.limits)

    def user(self, plan: SandboxPlan | None = None) -> tuple[int, int] | None:
        """Who a run of ``plan`` runs as: its organisation's user, under a root scheduler;
        None: the scheduler's own user (as an ordinary user, in a user namespace)."""
        if self.run_as is None:
            return None
        return plan.user if plan is not None and plan.user is not None else self.run_as

    def give(self, path: Path, user: tuple[int, int] | None = None) -> None:
        """Make ``path`` (a folder made for this run) the task's own, so it can write there:
        ``user``'s (``SandboxPlan.user``), else ``run_as``'s."""
        if self.run_as is None:
            return
        uid, gid = user or self.run_as
        os.chown(path, uid, gid)
        for here, dirs, files in walk_tree(path):
            for name in dirs + files:
                os.chown(os.path.join(here, name), uid, gid, follow_symlinks=False)

    def command(self, plan: SandboxPlan, argv: list[str], cwd: Path, group: RunGroup | None,
                copy_beside: bool = False) -> list[str]:
        """The launcher + bubblewrap command line that runs ``argv`` in ``cwd`` inside the sandbox.

        ``copy_beside``: ``argv`` waits for the private copy itself, so the copy is started
        beside it rather than before it. The program then starts in ``/`` with ``--copy PID
        DONE`` added to its arguments; before it runs any of the task's code it must wait for
        that child, fail the run unless the file DONE is there (remove it), and enter ``cwd``.
        """
        args = [self.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--unshare-cgroup-try", "--hostname", HOSTNAME]
        if self.run_as is None:
            # An ordinary user: bubblewrap needs a user namespace; none may be nested inside.
            args += ["--unshare-user", "--disable-userns"]
        else:
            # Root sets the sandbox up; setpriv (below) drops to the task's user with these.
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
        if not plan.network:
            args.append("--unshare-net")
        if self.seccomp is not None:
            args += ["--seccomp", SECCOMP_FD]
        args += _system_view()
        hosts = _hosts_file()
        if hosts is not None:  # the sandbox's own name resolves, as a host's does (Spark, Java need it)
            args += ["--ro-bind", hosts, "/etc/hosts"]
        owner = self.user(plan)
        accounts = _account_files(*owner) if owner is not None and owner != self.run_as else None
        if accounts is not None:  # the organisation's user has a name and a home, as nobody has
            args += ["--ro-bind", accounts[0], "/etc/passwd", "--ro-bind", accounts[1], "/etc/group"]
        # /dev/shm: POSIX semaphores and shared memory (multiprocessing's locks and queues,
        # joblib), the run's own like /tmp; what it holds counts against the run's memory.
        args += ["--proc", "/proc", "--dev", "/dev", "--perms", "01777", "--tmpfs", "/dev/shm",
                 "--perms", "01777", "--tmpfs", "/tmp", "--perms", "0777", "--dir", TASK_HOME]
        copy = plan.private_copy
        if copy is not None:
            for parent in _parents([copy, Path(PRISTINE)]):
                args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", str(copy), PRISTINE, "--perms", "0777"]
            if plan.limits.memory_bytes is not None:
                args += ["--size", str(plan.limits.memory_bytes)]
            # The tmpfs goes one level up: cp then makes the copy's own folder, as the task's
            # user (a tmpfs's root folder belongs to whoever mounted it). Mounted before the
            # other folders, so one that lies beside the checkout is shown on top of it.
            args += ["--tmpfs", str(copy.parent)]
        own = [p for p in _distinct(plan.read_only) if not _under_system(p)]
        shown = [dest for _, dest in plan.writable]
        inside_copy = copy is not None and _within(cwd, copy)
        for parent in _parents([*own, *shown, *([] if inside_copy else [cwd])]):
            args += ["--perms", "0755", "--dir", str(parent)]  # never inside the copy: cp makes it
        for path in own:
            args += ["--ro-bind", str(path), str(path)]
        for source, dest in plan.writable:
            args += ["--bind", str(source), str(dest)]
        args += ["--as-pid-1", "--chdir", "/", *_setenv(INSIDE_ENV), "--",
                 "/bin/sh", "-c", INIT, "peach-init"]
        if owner is not None:
            uid, gid = owner
            args += [self.setpriv or "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                     "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        beside = copy is not None and copy_beside
        # Beside the copy the program enters ``cwd`` itself (from its request): the command line
        # then names no folder of the run's own, so one started ahead can serve any task in it.
        inner = ["/bin/sh", "-c", TASK_STEP_BESIDE if beside else TASK_STEP, "peach-task",
                 PRISTINE if copy else "", str(copy or ""), "" if beside else str(cwd)]
        files = [str(f) for f in group.procs_files()] if group is not None else []
        return ["/bin/sh", "-c", LAUNCH, "peach-sandbox", self.seccomp or "", str(len(files)), *files, *args,
                *inner, *argv]


INSIDE_ENV = {"HOME": TASK_HOME, "TMPDIR": "/tmp"}  # what bubblewrap sets for every task


def inside_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` as a task in the sandbox sees it (bubblewrap's ``--setenv`` on top)."""
    return {**env, **INSIDE_ENV}


def _setenv(values: dict[str, str]) -> list[str]:
    return [arg for name, value in values.items() for arg in ("--setenv", name, value)]


def interpreter_home(interpreter: Path) -> Path:
    """The installation an environment's ``python`` comes from (its stdlib must be visible)."""
    real = Path(os.path.realpath(interpreter))
    return real.parent.parent


@functools.lru_cache(maxsize=1)
def _hosts_file() -> str | None:
    """The host's /etc/hosts with the sandbox's host name (``HOSTNAME``) on 127.0.0.1, once
    per process: the sandbox has a name of its own (its UTS namespace), which must resolve,
    as a host's own name does (``socket.gethostbyname(socket.gethostname())``; PySpark's
    Java gateway fails to start without it). None, with a warning, if it cannot be written."""
    try:
        try:
            with open("/etc/hosts", encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            text = "127.0.0.1\tlocalhost\n"
        folder = tempfile.mkdtemp(prefix="peach-sandbox-hosts-")
        os.chmod(folder, 0o755)  # the task's user reads it through the bind
        path = os.path.join(folder, "hosts")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{text.rstrip()}\n127.0.0.1\t{HOSTNAME}\n")
        os.chmod(path, 0o644)
    except OSError as exc:
        log.warning("the sandbox's host name %s will not resolve: cannot write its hosts file: %s", HOSTNAME, exc)
        return None
    atexit.register(shutil.rmtree, folder, True)
    return path


@functools.lru_cache(maxsize=None)
def _account_files(uid: int, gid: int) -> tuple[str, str] | None:
    """The host's /etc/passwd and /etc/group, each with an entry for ``uid``/``gid`` (an
    organisation's user, which the host does not know), once per process and user: programs
    that look their user up find one, with HOME as its home (Java takes its ``user.home``
    from it: Spark's Ivy failed on "?"; Python's ``getpass.getuser()`` and ``pwd`` too).
    None, with a warning, if they cannot be written."""
    try:
        folder = tempfile.mkdtemp(prefix="peach-sandbox-users-")
        os.chmod(folder, 0o755)  # the task's user reads them through the binds
        paths = []
        for name, line in (("passwd", f"peach:x:{uid}:{gid}:peach-tasks run:{TASK_HOME}:/usr/sbin/nologin"),
                           ("group", f"peach:x:{gid}:")):
            try:
                with open(f"/etc/{name}", encoding="utf-8", errors="replace") as handle:
                    text = handle.read().rstrip()
            except OSError:
                text = ""
            path = os.path.join(folder, name)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f"{text}\n{line}\n" if text else f"{line}\n")
            os.chmod(path, 0o644)
            paths.append(path)
    except OSError as exc:
        log.warning("the sandbox's user %s will have no name: cannot write its passwd file: %s", uid, exc)
        return None
    atexit.register(shutil.rmtree, folder, True)
    return paths[0], paths[1]


@functools.lru_cache(maxsize=None)
def _system_view() -> tuple[str, ...]:
    """The host's system folders, as bubblewrap arguments: looked at once per process."""
    args: list[str] = []
    for path in SYSTEM_READ_ONLY:
        if path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in MERGED_USR:
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return tuple(args)


# Paths are compared by their parts (absolute, normalised): ``root in path.parents`` builds
# and compares a Path per level, which made the command line cost a millisecond per run.
def _within(path: Path, root: Path) -> bool:
    """``path`` is ``root`` or lies below it."""
    top = root.parts
    return path.parts[:len(top)] == top


def _under_system(path: Path) -> bool:
    return any(_within(path, root) for root in SYSTEM_READ_ONLY)


def _distinct(paths: tuple[Path, ...]) -> list[Path]:
    """Each folder once, and none that another one already shows."""
    unique = sorted({Path(p) for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(_within(path, k) for k in kept):
            kept.append(path)
    return kept


_SYSTEM_PARTS = tuple(root.parts for root in SYSTEM_READ_ONLY)
_NEVER_MADE = {("/",), ("/", "tmp")}


def _parents(paths: list[Path]) -> list[Path]:
    """The folders above ``paths`` that bubblewrap must create, top first, readable by the
    task (bubblewrap would copy a private mode such as /root's 0700)."""
    found: set[tuple[str, ...]] = set()
    for path in paths:
        parts = Path(path).parts
        found.update(parts[:end] for end in range(1, len(parts)))
    kept = [Path(*parts) for parts in found
            if parts not in _NEVER_MADE and not any(parts[:len(top)] == top for top in _SYSTEM_PARTS)]
    return sorted(kept, key=lambda p: (len(p.parts), str(p)))


@functools.lru_cache(maxsize=None)
def make_sandbox() -> Sandbox:
    """The sandbox of this host, checked once per process by running a real one; raises
    ``SandboxUnavailable`` naming what is missing and how to get it."""
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(f"the sandbox needs Linux namespaces and cgroups; {INSTALL_HINT}")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}")
    run_as = (SANDBOX_UID, SANDBOX_GID) if os.geteuid() == 0 else None
    setpriv = shutil.which("setpriv") if run_as else None
    if run_as and setpriv is None:
        raise SandboxUnavailable("setpriv (util-linux) is not installed; the scheduler runs as root and "
                                 f"needs it to run tasks as an unprivileged user; {INSTALL_HINT}")
    try:
        cgroups = detect(CGROUP_BASE)
        # Every limit the runs use, so a missing controller shows here, not at the first run.
        probe_group = cgroups.create(f"probe-{os.getpid()}", Limits(memory_bytes=64 << 20, cpus=1, pids=64))
    except (CgroupError, OSError) as exc:
        raise SandboxUnavailable(f"no cgroup for the runs' limits: {exc}; run the scheduler as root or "
                                 "give it a delegated cgroup (systemd: Delegate=yes), or set "
                                 "'isolation: none'") from None
    sandbox = Sandbox(bwrap, cgroups, run_as, setpriv, filter_path())
    # A real sandbox as runs get it (a private copy on a sized tmpfs too: bubblewrap >= 0.7).
    with tempfile.TemporaryDirectory(prefix="peach-probe-") as tmp:
        checkout = Path(tmp, "checkout")
        checkout.mkdir()
        (checkout / "probe.txt").write_text("ok")
        os.chmod(tmp, 0o755)
        os.chmod(checkout, 0o755)
        plan = SandboxPlan(probe_group.name, probe_group.limits, private_copy=checkout,
                           read_only=(interpreter_home(Path(sys.executable)),))
        code = "import pathlib; pathlib.Path('probe.txt').write_text('written')"
        try:
            # The real interpreter: a virtualenv's python (sys.executable) lives outside what is shown.
            python = os.path.realpath(sys.executable)
            argv = sandbox.command(plan, [python, "-I", "-c", code], checkout, probe_group)
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(f"bubblewrap could not start a sandbox: {exc}; {INSTALL_HINT}") from None
        finally:
            probe_group.kill()
            probe_group.remove()
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise SandboxUnavailable(f"bubblewrap could not start a sandbox here ({said[0]}); the host must "
                                 f"allow namespaces; {INSTALL_HINT}")
    return sandbox
