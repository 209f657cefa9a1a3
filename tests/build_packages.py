"""Packages made by the tests of environment builds, served over HTTP on loopback (what a
build can reach in its sandbox): a wheel with a ``.pth`` file and a source distribution
with a build backend of its own (no build requirement to fetch)."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def wheel_bytes(name: str, files: dict[str, str]) -> bytes:
    """A minimal pure-Python wheel holding ``files`` at the root of site-packages."""
    dist = f"{name}-1.0.dist-info"
    contents = {**files,
                f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    contents[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for path, text in contents.items():
            archive.writestr(path, text)
    return out.getvalue()


def write_wheel(folder: Path, name: str, files: dict[str, str]) -> str:
    filename = f"{name}-1.0-py3-none-any.whl"
    (folder / filename).write_bytes(wheel_bytes(name, files))
    return filename


def write_sdist(folder: Path, name: str, files: dict[str, str]) -> str:
    """A source distribution whose ``backend.py`` (in ``files``) is its build backend."""
    pyproject = (f'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n\n'
                 f'[project]\nname = "{name}"\nversion = "1.0"\n')
    contents = {"pyproject.toml": pyproject, "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
                **files}
    filename = f"{name}-1.0.tar.gz"
    with tarfile.open(folder / filename, "w:gz") as archive:
        for path, text in contents.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-1.0/{path}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return filename


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``folder`` over HTTP on loopback; yields its base URL."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
