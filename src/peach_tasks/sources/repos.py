"""Git repositories: fetch the configured branch, keep immutable checkouts of it.

Each repository lives under ``state_dir/repos/<name>/``:

* ``mirror.git``   a bare repository fetched from the remote (only the one branch);
* ``checkouts/<sha>``  one exported tree per commit that has been the branch head;
  a running task keeps using its checkout while a newer one appears beside it, so a
  sync never has to wait for a task;
* ``good-head``    the commit last accepted; a force-push is not followed until a person
  accepts it (``peach-tasks sync --accept-rewrite NAME``), so rewritten history never
  silently replaces what runs;
* ``accept-rewrite``  left by that command: the next sync (its own, or that of the
  ``serve`` running on this state_dir) follows the branch wherever it now is, then removes it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PeachError, Problem
from ..trees import remove_tree

log = logging.getLogger(__name__)

GIT_TIMEOUT = 300.0
KEEP_CHECKOUTS = 3
# What one commit may check out on the scheduler's disk (the store's and every repository's):
# a 108 KB repository of nested trees (the third hostile pass) expanded to 1.1 million files
# and 4.3 GB, and its checkout held every organisation's sync for 107 s. Counted from the
# commit's tree, before anything is written.
MAX_CHECKOUT_FILES = 100_000  # files and folders: a tree of folders alone is a bomb too
MAX_CHECKOUT_BYTES = 2 << 30
NO_CONVERSIONS = "* -text -eol -filter -ident -working-tree-encoding\n"
_NAME_PART = re.compile(r"[A-Za-z0-9_.-]+")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a repository's folder, or None. A name is one or more parts
    of letters, digits, '_', '.' and '-' joined by '/' (a GitLab project's namespace/path),
    none of them '.' or '..': so ``state_dir/repos/<name>`` always lies inside state_dir."""
    parts = name.split("/")
    if not name or len(name) > 200 or any(part in ("", ".", "..") or not _NAME_PART.fullmatch(part)
                                          for part in parts):
        return (f"repository name {name[:100]!r}{'...' if len(name) > 100 else ''} is not a usable folder name: "
                "use letters, digits, '_', '.' and '-', parts joined by '/', none of them '.' or '..', at most "
                "200 characters (set `name:`)")
    return None


class CheckoutRefused(Exception):
    """A commit the scheduler will not check out (``Repository._check_size``)."""


class GitError(Exception):
    def __init__(self, args: list[str], stderr: str) -> None:
        self.stderr = stderr.strip()
        super().__init__(f"git {' '.join(args)}: {self.stderr}")


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", LC_ALL="C")
    return env


def git(*args: str, cwd: Path | None = None, git_dir: Path | None = None, timeout: float = GIT_TIMEOUT,
        extra_env: dict[str, str] | None = None) -> str:
    cmd = ["git"] + ([f"--git-dir={git_dir}"] if git_dir else []) + list(args)
    env = {**_git_env(), **(extra_env or {})}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise GitError(list(args), proc.stderr or proc.stdout)
    return proc.stdout


@dataclass
class Checkout:
    """One commit of a repository's branch, exported to a folder that never changes."""

    repo: str
    url: str
    branch: str
    commit: str
    path: Path
    mirror: Path
    _versions: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def version_of(self, relpath: str) -> str:
        """Short hash of the last commit on the branch that touched ``relpath``."""
        with self._lock:
            if relpath in self._versions:
                return self._versions[relpath]
        try:
            out = git("log", "-1", "--format=%h", self.commit, "--", relpath, git_dir=self.mirror).strip()
        except (GitError, subprocess.TimeoutExpired):
            out = ""
        version = out or self.commit[:7]
        with self._lock:
            self._versions[relpath] = version
        return version


@dataclass(frozen=True)
class SyncResult:
    checkout: Checkout | None  # the last good checkout (may be older than the remote)
    problems: tuple[Problem, ...]
    changed: bool  # True when checkout moved to a new commit in this sync


class Repository:
    """A configured repository; ``sync()`` is safe to call from one thread at a time."""

    def __init__(self, name: str, url: str, branch: str, state_dir: Path,
                 fetch_env: dict[str, str] | None = None) -> None:
        self.name, self.url, self.branch = name, url, branch
        # Extra environment for fetching only (e.g. a GitLab token as an HTTP header
        # through GIT_CONFIG_*), so a secret is never part of the url nor the mirror's config.
        self.fetch_env = fetch_env or {}
        self.root = state_dir / "repos" / name
        # The settings and discovery check names already; this is the guard of last resort
        # against a mirror or checkout written outside state_dir.
        bad = name_problem(name)
        base = (state_dir / "repos").resolve()
        if bad is None and base not in self.root.resolve().parents:
            bad = f"repository {name!r} would keep its files at {self.root.resolve()}, outside {base}"
        if bad is not None:
            raise PeachError(f"{bad}; give it another name")
        self.mirror = self.root / "mirror.git"
        self.checkouts = self.root / "checkouts"
        self.good_head_file = self.root / "good-head"
        self.accept_file = self.root / "accept-rewrite"
        self._current: Checkout | None = None

    # -- public -----------------------------------------------------------------
    def sync(self, in_use: set[Path] | None = None) -> SyncResult:
        problems: list[Problem] = []
        previous = self._load_current()
        accepted = self.accept_file.exists()  # someone ran `peach-tasks sync --accept-rewrite`
        try:
            self._ensure_mirror()
            remote_head = self._fetch()
        except (GitError, subprocess.TimeoutExpired, OSError) as exc:
            problems.append(self._fetch_problem(exc, previous))
            return SyncResult(previous, tuple(problems), False)

        head = remote_head
        rewritten = (previous is not None and previous.commit != remote_head
                     and not self._is_ancestor(previous.commit, remote_head))
        if rewritten and accepted:
            assert previous is not None
            log.warning("%s: following the rewritten history of branch %s (%s to %s), as accepted",
                        self.name, self.branch, previous.commit[:7], remote_head[:7])
        elif rewritten:
            assert previous is not None
            problems.append(Problem(
                "sync", self.name,
                f"branch '{self.branch}' of {self.url} was force-pushed (history rewritten from "
                f"{previous.commit[:7]} to {remote_head[:7]}); still running {previous.commit[:7]}. "
                f"Check the new history, then run 'peach-tasks sync --accept-rewrite {self.name}'",
            ))
            head = previous.commit
        try:
            checkout = self._checkout(head)
        except CheckoutRefused as exc:
            keep = f"still running {previous.commit[:7]}" if previous else "no checkout yet, so its tasks cannot run"
            problems.append(Problem("sync", self.name, f"{exc} ({keep})"))
            return SyncResult(previous, tuple(problems), False)
        except (GitError, subprocess.TimeoutExpired, OSError) as exc:
            problems.append(Problem("sync", self.name, f"cannot export commit {head[:7]}: {exc}; "
                                                       "check free disk space under state_dir"))
            return SyncResult(previous, tuple(problems), False)
        # The branch is kept with the commit: following another branch is not a rewrite.
        self.good_head_file.write_text(f"{checkout.commit} {self.branch}\n")
        self._current = checkout
        if accepted:
            self.accept_file.unlink(missing_ok=True)
        self._prune(checkout, in_use or set())
        return SyncResult(checkout, tuple(problems), previous is None or previous.commit != checkout.commit)

    def accept_rewrite(self) -> None:
        """Let the next sync follow the branch wherever it is, even onto rewritten history: a
        marker file, honoured by whichever scheduler syncs this state_dir next (this one, or
        the ``serve`` running on it), so the acceptance is never lost to another process."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.accept_file.write_text("accepted with 'peach-tasks sync --accept-rewrite'\n")

    # -- steps ------------------------------------------------------------------
    def _ensure_mirror(self) -> None:
        if not (self.mirror / "HEAD").exists():
            self.root.mkdir(parents=True, exist_ok=True)
            git("init", "--bare", "--quiet", str(self.mirror))
        # A checkout holds the committed bytes: the repository's .gitattributes may not convert
        # them on the way out (eol, working-tree-encoding: 1 MiB committed became 8 MiB on the
        # disk, past what _check_size counted). The mirror's info/attributes wins over them.
        attributes = self.mirror / "info" / "attributes"
        if not attributes.is_file() or attributes.read_text() != NO_CONVERSIONS:
            attributes.parent.mkdir(parents=True, exist_ok=True)
            attributes.write_text(NO_CONVERSIONS)
        # The url may have changed in the settings since the last start.
        git("config", "remote.origin.url", self.url, git_dir=self.mirror)

    def _fetch(self) -> str:
        ref = f"refs/remotes/origin/{self.branch}"
        git("fetch", "--quiet", "--no-tags", "--prune", "origin",
            f"+refs/heads/{self.branch}:{ref}", git_dir=self.mirror, extra_env=self.fetch_env)
        return git("rev-parse", "--verify", f"{ref}^{{commit}}", git_dir=self.mirror).strip()

    def _fetch_problem(self, exc: Exception, previous: Checkout | None) -> Problem:
        detail = exc.stderr if isinstance(exc, GitError) else str(exc)
        keep = (f"still running {previous.commit[:7]}" if previous
                else "no checkout yet, so its tasks cannot run")
        if "couldn't find remote ref" in detail or "could not find remote ref" in detail:
            what = (f"branch '{self.branch}' no longer exists on {self.url} ({keep}); "
                    f"push it again or change 'branch' in scheduler.yaml")
        else:
            last = detail.strip().splitlines()[-1] if detail.strip() else type(exc).__name__
            what = (f"cannot fetch {self.url} ({last}); {keep}. "
                    "Check the url, the network and the access rights")
        return Problem("sync", self.name, what)

    def _is_ancestor(self, old: str, new: str) -> bool:
        try:
            git("merge-base", "--is-ancestor", old, new, git_dir=self.mirror)
            return True
        except GitError:
            return False

    def _checkout(self, commit: str) -> Checkout:
        target = self.checkouts / commit
        if not target.is_dir():
            self.checkouts.mkdir(parents=True, exist_ok=True)
            self._check_size(commit)
            tmp = self.checkouts / f".tmp-{commit}-{os.getpid()}"
            remove_tree(tmp)
            tmp.mkdir()
            # read-tree + checkout-index, not 'git archive': an archive leaves out what
            # .gitattributes marks export-ignore, which 'validate' (a working copy) sees.
            index = self.checkouts / f".index-{commit}-{os.getpid()}"
            env = {**_git_env(), "GIT_INDEX_FILE": str(index)}
            try:
                for step in (["read-tree", commit], ["checkout-index", "--all", "--force"]):
                    done = subprocess.run(["git", f"--git-dir={self.mirror}", f"--work-tree={tmp}", *step],
                                          capture_output=True, env=env, timeout=GIT_TIMEOUT)
                    if done.returncode != 0:
                        remove_tree(tmp)
                        raise GitError(step, done.stderr.decode(errors="replace"))
            finally:
                index.unlink(missing_ok=True)
            os.replace(tmp, target)  # atomic: a checkout folder is complete or absent
        return Checkout(self.name, self.url, self.branch, commit, target, self.mirror)

    def _check_size(self, commit: str) -> None:
        """Raise ``CheckoutRefused`` when ``commit``'s tree holds more than ``MAX_CHECKOUT_FILES``
        files or ``MAX_CHECKOUT_BYTES``: its listing is read as it comes, and stopped there."""
        step = ["ls-tree", "-r", "-t", "-l", "-z", "--full-tree", commit]  # -t: each folder too
        proc = subprocess.Popen(["git", f"--git-dir={self.mirror}", *step], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=_git_env())
        assert proc.stdout is not None
        files = size = 0
        deadline = time.monotonic() + GIT_TIMEOUT
        try:
            rest = b""
            while chunk := proc.stdout.read(1 << 16):
                entries = (rest + chunk).split(b"\0")
                rest = entries.pop()
                for entry in entries:  # "<mode> <type> <object> <size>\t<path>"; a path may hold anything
                    files += 1
                    fields = entry.split(b"\t", 1)[0].split()
                    if len(fields) == 4 and fields[1] == b"blob" and fields[3].isdigit():
                        size += int(fields[3])
                if files > MAX_CHECKOUT_FILES or size > MAX_CHECKOUT_BYTES or time.monotonic() > deadline:
                    break
        finally:
            proc.kill()
            proc.wait()
        too_many = f"more than {MAX_CHECKOUT_FILES:,} files and folders" if files > MAX_CHECKOUT_FILES else None
        limit = MAX_CHECKOUT_BYTES
        shown = f"{limit >> 30} GiB" if limit >= 1 << 30 and limit % (1 << 30) == 0 else f"{limit:,} bytes"
        too_big = f"more than {shown}" if size > limit else None
        if too_many or too_big:
            raise CheckoutRefused(f"commit {commit[:7]} holds {too_many or too_big}, which the scheduler does not "
                                  "check out (one repository's checkout must not fill the disk every organisation "
                                  "shares); keep data out of the repository")
        if time.monotonic() > deadline:
            raise GitError(step, f"listing commit {commit[:7]} took more than {GIT_TIMEOUT:g} s")

    def _load_current(self) -> Checkout | None:
        if self._current is not None:
            return self._current
        try:
            commit, _, branch = self.good_head_file.read_text().strip().partition(" ")
        except OSError:
            return None
        if branch and branch != self.branch:
            return None  # the settings (or GitLab's default branch) moved to another branch
        if commit and (self.checkouts / commit).is_dir():
            self._current = Checkout(self.name, self.url, self.branch, commit, self.checkouts / commit, self.mirror)
        return self._current

    def _prune(self, current: Checkout, in_use: set[Path]) -> None:
        """Keep the newest few checkouts and every one a running task still uses."""
        try:
            entries = sorted((p for p in self.checkouts.iterdir() if not p.name.startswith(".")),
                             key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for path in entries[KEEP_CHECKOUTS:]:
            if path != current.path and path not in in_use:
                remove_tree(path)
