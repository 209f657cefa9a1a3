"""Which dependency strings a definition file may list, and their canonical form.

Every entry of a ``dependencies`` list is handed to uv to build the organisation's
environment, so it must be a plain PEP 508 requirement *by name*: pip options could
point uv at another index, and local paths or direct URLs would make the environment
depend on files or hosts outside the repository and the package index. Everything
else is rejected with a sentence that says what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

_EXAMPLE = "e.g. 'tabulate==0.9.0'"
_HOW = f"list packages by name and version (PEP 508), {_EXAMPLE}"

# Version-control schemes pip understands ("git+https://...", "hg+ssh://...").
_VCS_PREFIX = re.compile(r"^(git|hg|svn|bzr)\+", re.IGNORECASE)
# Built or source distributions given as a file name rather than a package name.
_ARCHIVE_SUFFIX = re.compile(r"\.(whl|zip|tgz|tar|tar\.gz|tar\.bz2|tar\.xz)$", re.IGNORECASE)
# "C:\pkg" or "C:/pkg": a Windows path someone copied in.
WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")

# Long entries are cut in messages so one bad line cannot flood the problem list.
_SHOWN_MAX = 120


def _shown(text: str) -> str:
    if len(text) > _SHOWN_MAX:
        text = text[: _SHOWN_MAX - 3] + "..."
    return "'" + text + "'"


def _is_url(text: str) -> bool:
    return "://" in text or bool(_VCS_PREFIX.match(text))


def _is_local_path(text: str) -> bool:
    if text.startswith((".", "/", "\\", "~", "file:")) or WINDOWS_DRIVE.match(text):
        return True
    # Only the part before an environment marker can be a path: markers may contain
    # slashes inside quoted values ("platform_release == '5.4/x'").
    head = text.split(";", 1)[0].strip()
    return "/" in head or "\\" in head or bool(_ARCHIVE_SUFFIX.search(head))


def requirement_problem(text: object) -> str | None:
    """Say what is wrong with one ``dependencies`` entry, or return None if it is fine.

    Accepted: PEP 508 requirements by name, with optional extras, version specifiers
    and environment markers (``tabulate``, ``numpy>=1.26``,
    ``requests[socks]; python_version>='3.8'``). Rejected: non-strings, empty strings,
    pip options (anything starting with ``-``), local paths and archives, direct URLs
    (``name @ https://...``, ``git+https://...``) and text ``packaging`` cannot parse.
    The returned sentence names the entry, says what is wrong and what to write instead.
    """
    if not isinstance(text, str):
        return (
            f"dependency {text!r} is not a string ({type(text).__name__}); "
            f"write each requirement as a quoted string with the package's name and version (PEP 508), {_EXAMPLE}"
        )
    stripped = text.strip()
    if not stripped:
        return f"a dependency is empty; remove it or {_HOW}"
    if stripped.startswith("-"):
        return f"{_shown(stripped)} is a pip option, not a requirement; {_HOW}"
    if stripped.lower().startswith("file:"):
        return f"{_shown(stripped)} is a local path, not a requirement; {_HOW}"
    if _is_url(stripped) and "@" not in stripped.split("://", 1)[0]:
        # A bare URL ("https://host/pkg.whl", "git+https://..."); "name @ url" is
        # parsed below so that its own message can name the package.
        return f"{_shown(stripped)} is a direct URL, not a requirement; {_HOW}"
    if "@" not in stripped and _is_local_path(stripped):
        return f"{_shown(stripped)} is a local path, not a requirement; {_HOW}"
    try:
        req = Requirement(stripped)
    except InvalidRequirement as exc:
        # packaging's message spans several lines (text plus a caret); keep the first,
        # which says what it expected.
        reason = str(exc).splitlines()[0].strip() if str(exc).strip() else "cannot be parsed"
        return f"{_shown(stripped)} is not a valid requirement ({reason}); {_HOW}"
    if req.url is not None:
        if req.url.lower().startswith("file:") or not _is_url(req.url):
            return f"{_shown(stripped)} points at a local path, not a package index; {_HOW}"
        return f"{_shown(stripped)} is a direct URL, not a requirement by name; {_HOW}"
    return None


def normalise_requirements(reqs: Iterable[str]) -> tuple[str, ...]:
    """Canonical, deduplicated and sorted form of valid requirement strings.

    Names are canonicalised (``Foo.Bar`` -> ``foo-bar``) and each entry is re-written
    by ``packaging`` (extras and specifiers in a fixed order, markers normalised), so
    two spellings of the same requirement become one entry and the result is stable
    enough to key an environment on. Entries must already have passed
    ``requirement_problem``; an unparseable one raises ``InvalidRequirement``.
    """
    canonical = set()
    for text in reqs:
        req = Requirement(text.strip())
        req.name = canonicalize_name(req.name)
        canonical.add(str(req))
    # Sort by name, then text: plain text order would put "a-b" between "a" and "a>=1".
    return tuple(sorted(canonical, key=lambda s: (canonicalize_name(Requirement(s).name), s)))
