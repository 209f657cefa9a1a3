"""``display()`` in the task process: what a task shows is kept as its run's outputs.

Runs inside the task process (standard library only), loaded by ``bootstrap.py`` only when
a task first calls ``display()`` or imports ``matplotlib.pyplot`` or IPython's display
functions, so a task that shows nothing pays nothing for it.

As in a Jupyter kernel: ``display(obj)`` uses the object's rich representations
(``_repr_mimebundle_``, ``_repr_html_``, ``_repr_png_``, ...; a pandas DataFrame is an HTML
table), ``display_id=`` gives a handle whose update replaces the earlier output, and
matplotlib figures are shown by ``plt.show()`` and, left open, when the run ends (the
non-interactive Agg backend is chosen unless the task chose one).

Each output is written as it happens, as one JSON file in the run's outputs folder (write,
then rename: the scheduler never reads half a file), so a run that fails, times out or is
killed keeps what it had shown. The run's bounds (count and bytes) are applied here, so a
task displaying 10,000 times or 500 MB writes no more than the bounds; the scheduler applies
them again when it reads the folder (``run_outputs.py``), since the task owns that folder.
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import sys
import threading
import uuid

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# displays_figures.py (matplotlib's figures) and displays_pretty.py (the text of a result, as
# IPython's pretty printer writes it), set by bootstrap.py when it loads these files.
figures = type(sys)("displays_figures, set by bootstrap.py")
pretty = type(sys)("displays_pretty, set by bootstrap.py")

# The representation kept of each output: the first of these an object offers (as
# nbconvert prefers them), plus its text/plain for the views that show text only.
PREFERRED = ("text/html", "image/png", "image/jpeg", "image/gif", "image/svg+xml", "text/markdown",
             "application/json", "text/latex", "text/plain")
BINARY = frozenset(("image/png", "image/jpeg", "image/gif"))
_METHODS = {"text/html": "_repr_html_", "text/markdown": "_repr_markdown_", "image/svg+xml": "_repr_svg_",
            "image/png": "_repr_png_", "image/jpeg": "_repr_jpeg_", "application/json": "_repr_json_",
            "text/latex": "_repr_latex_", "application/javascript": "_repr_javascript_"}
MAX_TEXT_CHARS = 2000  # the text/plain kept beside a rich output
DROPPED_FILE = "dropped.json"


class Outputs:
    """The run's outputs folder and its bounds; one per task process (``install``)."""

    def __init__(self, folder: str, max_count: int, max_bytes: int) -> None:
        self.folder, self.max_count, self.max_bytes = folder, max_count, max_bytes
        self.lock = threading.RLock()
        self.count = 0  # outputs written (an update does not count again)
        self.used = 0  # bytes of the outputs as they stand
        self.sizes: dict[int, int] = {}
        self.by_id: dict[str, list[int]] = {}  # display_id -> the outputs it names
        self.dropped = 0
        self.dropped_bytes = 0
        self.ready = False
        self.cell_first = 1  # the first output of the running cell: what clear_output() removes
        self.clear_pending = False  # clear_output(wait=True): at the cell's next output

    def room(self) -> int:
        return self.max_bytes - self.used

    def cell_started(self) -> None:
        with self.lock:
            self.cell_first, self.clear_pending = self.count + 1, False

    def clear(self, wait: bool) -> None:
        """IPython's ``clear_output``: the running cell's outputs go, now or (``wait``) when
        its next output comes; a wait with no output after it clears nothing, as in Jupyter."""
        with self.lock:
            if wait:
                self.clear_pending = True
                return
            for seq in range(self.cell_first, self.count + 1):
                try:
                    os.remove(os.path.join(self.folder, f"{seq:06d}.json"))
                except OSError:
                    pass
                self.used -= self.sizes.pop(seq, 0)
            self.count, self.clear_pending = self.cell_first - 1, False
            self.by_id = {key: [seq for seq in seqs if seq < self.cell_first] for key, seqs in self.by_id.items()}

    def add(self, output: dict, display_id: str | None = None) -> None:
        with self.lock:
            if self.clear_pending:
                self.clear(wait=False)
            size = output["size"]
            if self.count >= self.max_count or output["data"] is None or self.used + size > self.max_bytes:
                self._drop(size, "count" if self.count >= self.max_count else "bytes")
                return
            seq = self.count + 1
            if self._write(seq, output):
                self.count, self.used, self.sizes[seq] = seq, self.used + size, size
                if display_id is not None:
                    self.by_id.setdefault(display_id, []).append(seq)

    def update(self, output: dict, display_id: str) -> None:
        """Replace every output shown with ``display_id`` (IPython's ``update=True``)."""
        with self.lock:
            size = output["size"]
            for seq in self.by_id.get(display_id, ()):
                if output["data"] is None or self.used - self.sizes[seq] + size > self.max_bytes:
                    self._drop(size, "bytes")
                    continue
                if self._write(seq, output):
                    self.used += size - self.sizes[seq]
                    self.sizes[seq] = size

    def _write(self, seq: int, output: dict) -> bool:
        data = output["data"]
        record = dict(output, seq=seq)
        del record["size"]
        if output["mime"] in BINARY:
            record["data"], record["base64"] = base64.b64encode(data).decode("ascii"), True
        else:
            record["data"] = data.decode("utf-8")
        try:
            if not self.ready:
                os.makedirs(self.folder, exist_ok=True)
                self.ready = True
            _write_json(self.folder, f"{seq:06d}.json", record)
            return True
        except (OSError, ValueError) as exc:  # a full disk, a folder the task removed
            _say(f"peach-tasks: output {seq} could not be written: {exc}")
            return False

    def _drop(self, size: int, why: str) -> None:
        self.dropped += 1
        self.dropped_bytes += size
        if self.dropped == 1:
            limit = (f"at most {self.max_count} outputs" if why == "count"
                     else f"at most {self.max_bytes} bytes of outputs")
            _say(f"peach-tasks: a run keeps {limit} (outputs.max_count and outputs.max_bytes in "
                 "scheduler.yaml); this output and any more beyond the bounds are not kept")
        if self.dropped == 1 or self.dropped % 1000 == 0:
            self.write_dropped()

    def write_dropped(self) -> None:
        if not self.dropped:
            return
        try:
            os.makedirs(self.folder, exist_ok=True)
            _write_json(self.folder, DROPPED_FILE, {"count": self.dropped, "bytes": self.dropped_bytes})
        except OSError:
            pass


_outputs: Outputs | None = None


def install(folder: str, max_count: int, max_bytes: int) -> None:
    """Where this process's outputs go (bootstrap calls it before the task runs)."""
    global _outputs
    _outputs = Outputs(folder, max_count, max_bytes)


# -- display() ---------------------------------------------------------------------------
class DisplayHandle:
    """What ``display(..., display_id=...)`` returns, as in IPython."""

    def __init__(self, display_id: str | None = None) -> None:
        self.display_id = display_id or uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"<DisplayHandle display_id={self.display_id}>"

    def display(self, obj: object, **kwargs: object) -> None:
        display(obj, display_id=self.display_id, **kwargs)

    def update(self, obj: object, **kwargs: object) -> None:
        update_display(obj, display_id=self.display_id, **kwargs)


def display(*objs: object, include: object = None, exclude: object = None, metadata: object = None,
            transient: object = None, display_id: object = None, raw: bool = False, clear: bool = False,
            update: bool = False, _peach_result: bool = False, **kwargs: object) -> DisplayHandle | None:
    """Show ``objs`` as the run's outputs (IPython's signature; ``raw``: each is a mime bundle).
    ``_peach_result``: a cell's result (bootstrap_cells.show_result), whose errors fail the cell."""
    global _showing_result
    if _peach_result:
        _showing_result = True
        try:
            return display(*objs, include=include, exclude=exclude, metadata=metadata, transient=transient,
                           display_id=display_id, raw=raw, clear=clear, update=update, **kwargs)
        finally:
            _showing_result = False
    if display_id is True:
        display_id = uuid.uuid4().hex
    key = None if display_id is None else str(display_id)
    if not raw:  # an object that displays itself (_ipython_display_) is not formatted, as in IPython
        objs = tuple(obj for obj in objs if not _displays_itself(obj))
    bundles = [obj if raw and isinstance(obj, dict) else mime_bundle(obj, include, exclude) for obj in objs]
    capture = _capturing()
    if capture is not None:  # inside %%capture: kept in its .outputs, shown by its .show() (IPython)
        capture.extend(RichOutput(bundle) for bundle in bundles)
        return DisplayHandle(key) if key is not None and not update else None
    for obj, bundle in zip(objs, bundles):
        if _outputs is None:  # no outputs folder (not a scheduled run): as IPython without a kernel
            print(bundle.get("text/plain", ""))
            continue
        if _script_only(bundle):
            _not_kept(["application/javascript" if "application/javascript" in bundle else
                       "text/html that shows nothing without its scripts"], "the dashboard runs no task's script")
            continue
        output = _pick(bundle, "figure" if figures.is_figure(obj) else "display", _outputs.room())
        if output is None:
            _not_kept([str(mime) for mime in bundle], _PLOTLY if _PLOTLY_TYPE in bundle else None)
            continue
        if update and key is not None:
            _outputs.update(output, key)
        else:
            _outputs.add(output, key)
    return DisplayHandle(key) if key is not None and not update else None


_unkept: set[str] = set()  # the types already said not to be kept in this run


def _script_only(bundle: dict) -> bool:
    """A script and its placeholder text (``Javascript(...)``, ``%%javascript``, a progress
    bar's updates), or HTML that shows nothing until its scripts run (plotly's figure, an
    empty ``div`` its script fills, and its set-up, 4.8 MB of plotly.js): nothing a run keeps
    (the dashboard runs no task's script), where Jupyter's page runs it; not an output
    each, showing nothing and eating the bound."""
    others = [m for m in PREFERRED if m in bundle and m not in ("text/plain", "text/html")]
    if others:
        return False
    html = bundle.get("text/html")
    if isinstance(html, str) and _shows_nothing(html):
        return True
    # A script with its own text (an object whose __repr__ says something): that text is kept.
    return "application/javascript" in bundle and html is None and _placeholder(bundle.get("text/plain"))


def _placeholder(text: object) -> bool:
    """No text, or one line in angle brackets: Python's default ``<module.Class object at
    0x...>``, IPython's ``<IPython.core.display.Javascript object>``, a raw bundle's."""
    if not isinstance(text, str) or not text.strip():
        return True
    text = text.strip()
    return text.startswith("<") and text.endswith(">") and "\n" not in text


# What shows something without a script: text, and these elements.
_MEDIA = ("<img", "<svg", "<video", "<audio", "<iframe", "<object", "<embed", "<picture", "<input", "<button",
          "<select", "<textarea", "<math")


def _shows_nothing(html: str) -> bool:
    """Whether ``html`` has scripts and, besides them (and styles and comments), only tags
    without text or media."""
    lower = html.lower()
    if "<script" not in lower:
        return False
    import re  # only for HTML with a script: a task that displays none never loads re for this

    rest = re.sub(r"<script\b.*?(?:</script\s*>|\Z)|<style\b.*?(?:</style\s*>|\Z)|<!--.*?(?:-->|\Z)", "",
                  lower, flags=re.S)
    if any(tag in rest for tag in _MEDIA):
        return False
    return not re.sub(r"<[^>]*>", "", rest).replace("&nbsp;", "").strip()


_PLOTLY_TYPE = "application/vnd.plotly.v1+json"
_PLOTLY = ("a Plotly figure is drawn by plotly.js, which the dashboard does not run; display a static "
           "image of it (fig.to_image(format='png'), with kaleido) or save fig.write_html(...)")


def _not_kept(types: list[str], why: str | None = None) -> None:
    """Say once per type that a display of no kept type (``application/javascript``: the
    dashboard runs no task's script) is not an output, rather than drop it silently."""
    types = sorted(set(types) - _unkept)
    if types:
        _unkept.update(types)
        _say(f"peach-tasks: display of {', '.join(types[:5])} not kept as an output "
             f"({why or 'a run keeps ' + ', '.join(PREFERRED)})")


class RichOutput:
    """A display ``%%capture`` kept, as IPython's: ``data`` maps each mime type to its
    content; ``display()`` (or the capture's ``show()``) shows it again."""

    def __init__(self, data: dict, metadata: dict | None = None) -> None:
        self.data, self.metadata = data, metadata or {}

    def display(self) -> None:
        display(self)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict:
        return self.data


class _CapturedInto:
    """A ``capture_output()`` block's output list, which holds what ``RichOutput`` takes as
    keywords (IPython's ``CapturedIO.outputs`` builds them from it)."""

    def __init__(self, target: list) -> None:
        self.target = target

    def extend(self, outputs: Any) -> None:
        self.target.extend({"data": output.data, "metadata": output.metadata} for output in outputs)


_captures: list[_CapturedInto] = []  # the capture_output() blocks open now, innermost last


def _capturing() -> list | _CapturedInto | None:
    """The output list of the ``capture_output()`` block or ``%%capture`` (notebook_shell.py)
    running now, if any."""
    if _captures:
        return _captures[-1]
    shell = getattr(builtins, "get_ipython", None)
    try:
        sinks = getattr(shell(), "display_sinks", None) if shell is not None else None
    except Exception:  # a get_ipython of the task's own
        return None
    return sinks[-1] if isinstance(sinks, list) and sinks else None


def update_display(obj: object, *, display_id: object, **kwargs: object) -> None:
    """Replace the outputs shown with ``display_id`` by ``obj``."""
    kwargs.pop("update", None)
    display(obj, display_id=display_id, update=True, **kwargs)


def _displays_itself(obj: object) -> bool:
    """IPython's ``_ipython_display_``: the object displays itself (called here) instead of
    being formatted."""
    method = None if _lies(obj) else _method(obj, "_ipython_display_")
    if method is None:
        return False
    _call(method)
    return True


# What IPython asks an object before trusting its _repr_*_ methods: one that answers this
# name too answers any (a __getattr__ that makes up attributes: a mock, an attribute dict).
_CANARY = "_ipython_canary_method_should_not_exist_"


def _lies(obj: object) -> bool:
    try:
        return getattr(obj, _CANARY, None) is not None
    except Exception:
        return False


def mime_bundle(obj: object, include: object = None, exclude: object = None) -> dict:
    """``obj``'s representations by mime type, as IPython's formatter finds them; with
    ``include`` only those types, without those of ``exclude``."""
    bundle = _representations(obj, include, exclude)
    if isinstance(include, (list, tuple, set, frozenset)):
        bundle = {mime: value for mime, value in bundle.items() if mime in include}
    if isinstance(exclude, (list, tuple, set, frozenset)):
        bundle = {mime: value for mime, value in bundle.items() if mime not in exclude}
    return bundle


def _representations(obj: object, include: object, exclude: object) -> dict:
    bundle: dict = {}
    if figures.is_figure(obj):  # as Jupyter's inline backend: a PNG, unless the task chose other formats
        bundle.update(figures.figure_bundle(obj))
    if _lies(obj):  # only its text, as IPython shows it
        bundle["text/plain"] = _plain(obj)
        return bundle
    method = _method(obj, "_repr_mimebundle_")
    if method is not None:
        found = _call(method, include=include, exclude=exclude)
        found = found[0] if isinstance(found, tuple) and found else found
        if isinstance(found, dict):
            bundle.update({str(k): v for k, v in found.items() if v is not None})
    for mime, name in _METHODS.items():
        if mime in bundle:
            continue
        method = _method(obj, name)
        if method is not None:
            value = _call(method)
            value = value[0] if isinstance(value, tuple) and value else value
            if value is not None:
                bundle[mime] = value
    if "text/plain" not in bundle:
        bundle["text/plain"] = _plain(obj)
    return bundle


def _plain(obj: object) -> str:
    try:  # as IPython's pretty printer writes it: a long list one item a line, a set sorted
        return pretty.pretty(obj)
    except Exception as exc:  # a broken __repr__: the run goes on, and fails at its end, as under papermill
        failed(f"the repr of a {type(obj).__name__}", exc)
        return f"<{type(obj).__name__}: repr failed: {exc!r}>"


def _pick(bundle: dict, kind: str, room: int) -> dict | None:
    """The kept representation of ``bundle`` as bytes, with its text/plain beside it. One
    longer than ``room`` is not even encoded: its ``data`` is None (a 500 MB string would
    otherwise be copied once more only to be dropped)."""
    plain = bundle.get("text/plain")
    text = None if not isinstance(plain, str) else plain[:MAX_TEXT_CHARS]
    for mime in PREFERRED:
        if mime not in bundle:
            continue
        value = bundle[mime]
        sized = isinstance(value, (bytes, bytearray)) or (isinstance(value, str) and mime not in BINARY)
        if sized and len(value) > room:
            return {"kind": kind, "mime": mime, "data": None, "size": len(value), "text": text}
        data = _as_bytes(mime, value)
        if data is not None:
            return {"kind": kind, "mime": mime, "data": data, "size": len(data), "text": text}
    return None


def _as_bytes(mime: str, value: object) -> bytes | None:
    if mime in BINARY:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):  # already base64, as Jupyter keeps images
            try:
                return base64.b64decode(value, validate=False)
            except ValueError:
                return None
        return None
    if mime == "application/json" and not isinstance(value, str):
        try:
            return json.dumps(value, default=repr).encode("utf-8")
        except (TypeError, ValueError, RecursionError):
            return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    return value.encode("utf-8", errors="replace")


def _method(obj: object, name: str) -> object:
    if isinstance(obj, type):  # a class's repr methods are unbound: IPython skips them too
        return None
    try:
        method = getattr(obj, name, None)
    except Exception:
        return None
    return method if callable(method) else None


def _call(method: object, **kwargs: object) -> object:
    try:
        return method(**kwargs)  # type: ignore[operator]
    except NotImplementedError:  # IPython's formatters take it as "no such representation"
        return None
    except Exception as exc:  # IPython shows the formatter's error and goes on
        if kwargs and isinstance(exc, TypeError):  # an older _repr_mimebundle_(), without include and exclude
            return _call(method)
        failed(f"{getattr(method, '__qualname__', None) or getattr(method, '__name__', 'a repr method')}()", exc)
        return None


def clear_output(wait: bool = False) -> None:
    """IPython's: the running cell's outputs are cleared (``wait``: when its next output
    comes), so a loop that redraws a figure keeps its last one, as the notebook does."""
    if _outputs is not None:
        _outputs.clear(bool(wait))


def cell_started() -> None:
    """A notebook cell begins (bootstrap): what ``clear_output`` may clear starts here."""
    if _outputs is not None:
        _outputs.cell_started()


def after_ipython_display(module: object) -> None:
    """IPython's ``display`` without a kernel only prints (``clear_output`` prints escape
    codes): the task's ``from IPython.display import display`` gets this one instead."""
    for name, value in (("display", display), ("update_display", update_display), ("DisplayHandle", DisplayHandle),
                        ("clear_output", clear_output), ("publish_display_data", publish_display_data)):
        if hasattr(module, name):
            setattr(module, name, value)


def publish_display_data(data: object, metadata: object = None, source: object = None, *, transient: object = None,
                         **kwargs: object) -> None:
    """IPython's lowest display call (bokeh's ``show`` and ``output_notebook`` use it): the
    bundle, as ``display(data, raw=True)``; without a kernel IPython's only printed its text."""
    display_id = transient.get("display_id") if isinstance(transient, dict) else None
    display(data, raw=True, display_id=display_id, update=bool(kwargs.get("update")))


def after_capture(module: Any) -> None:
    """IPython's ``capture_output()`` (``with capture_output() as c:``) captures a block's
    prints and displays into ``c``, as in Jupyter. IPython's own asks the kernel's shell for
    its display publisher, which a run does not have (it failed with an AttributeError with
    magics in the notebook, and captured no display without): its displays go to ``c`` here."""
    cls = getattr(module, "capture_output", None)
    if cls is None or getattr(cls, "peach_captures", False):
        return

    def enter(self: Any) -> Any:
        self.sys_stdout, self.sys_stderr = sys.stdout, sys.stderr
        stdout = stderr = outputs = None
        if self.stdout:
            stdout = sys.stdout = module.StringIO()
        if self.stderr:
            stderr = sys.stderr = module.StringIO()
        if self.display:
            outputs = []
            _captures.append(_CapturedInto(outputs))
        return module.CapturedIO(stdout, stderr, outputs)

    def leave(self: Any, *exc: object) -> None:
        sys.stdout, sys.stderr = self.sys_stdout, self.sys_stderr
        if self.display and _captures:
            _captures.pop()

    cls.__enter__, cls.__exit__, cls.peach_captures = enter, leave, True


def after_getipython(module: object) -> None:
    """Outside a kernel IPython's ``get_ipython()`` returns None: a task's ``from IPython
    import get_ipython`` (which shadows the builtin), and a library that asks IPython, get
    the run's shell instead, as in Jupyter, in a notebook that has one (magics); a module
    imported ahead gets it too (``shell_on_demand``, set by bootstrap.py)."""
    if hasattr(module, "get_ipython"):
        module.get_ipython = _get_ipython  # type: ignore[attr-defined]


shell_on_demand = None  # bootstrap.py's: () -> the run's shell, started if need be


def _get_ipython() -> object:
    shell = getattr(builtins, "get_ipython", None)
    if callable(shell):
        return shell()
    return shell_on_demand() if callable(shell_on_demand) else None


# What bootstrap.py runs after each of these modules is imported (the matplotlib ones are
# displays_figures.py's, added by bootstrap.py when it loads that file).
AFTER_IMPORT = {"IPython.core.display_functions": after_ipython_display,
                "IPython.core.display": after_ipython_display,
                "IPython.core.getipython": after_getipython,
                "IPython.utils.capture": after_capture}


def finish() -> None:
    """At the run's end, whatever it was: the figures left open, and what was not kept."""
    try:
        figures.flush_figures(at_end=True)
    finally:
        if _outputs is not None:
            _outputs.write_dropped()


# Errors raised while the run's outputs were made: a repr method (``__repr__``,
# ``_repr_html_``...) or a figure that could not be drawn. IPython shows each as a traceback
# in the cell's output and the later cells run; papermill then fails the run, and so does a
# run (bootstrap.py, after its last cell), with the first one: (where, what, exception).
first_failure: tuple | None = None
failure_count = 0
MAX_FAILURES_SAID = 20  # a task failing 100,000 displays does not flood the log with them


def _no_cell() -> str | None:
    return None


running_cell: Callable[[], str | None] = _no_cell  # bootstrap.py's: "NOTEBOOK cell N", or None


_showing_result = False  # a cell's result is being shown (display(..., _peach_result=True))


def failed(what: str, exc: BaseException, where: str | None = None) -> None:
    """``what`` (a repr method, a figure's drawing, a ``%time`` statement, a cell tagged
    ``raises-exception``) raised ``exc`` in cell ``where`` (default: the running one): said in
    the log now, and the run fails at its end, as under papermill. While a cell's result is
    shown, the cell fails at once instead (papermill stops there)."""
    global first_failure, failure_count
    if _showing_result:
        raise exc
    failure_count += 1
    where = where or running_cell()
    if first_failure is None:
        first_failure = (where, what, exc)
    if failure_count <= MAX_FAILURES_SAID:
        _say(f"peach-tasks: {where + ': ' if where else ''}{what} raised {exc!r}; the cells go on, as in Jupyter, "
             "and the run fails at its end, as under papermill")


def _write_json(folder: str, name: str, data: dict) -> None:
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, os.path.join(folder, name))


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except Exception:
        pass
