"""A result's text as IPython's pretty printer writes it, without importing IPython.

Runs in the task process (standard library only), loaded with ``displays.py``. Jupyter shows
a cell's result and a ``display()``-ed object's ``text/plain`` with ``IPython.lib.pretty``,
not ``repr()``: a list too long for one line of 79 columns has one item a line, a set is
sorted, an object without a ``__repr__`` of its own reads ``<__main__.Point at 0x...>``, a
function ``<function __main__.f(a, b=1)>``. This writes the same text.

The layout is the classic one of pretty printers: the text is built as a tree of groups,
each holding text and *breaks* (a space, or a new line when the group is broken). A group
is written on one line when that line, up to the next break of an enclosing group, fits in
79 columns; otherwise each of its breaks starts a new line, indented by the indentation of
every group it is in (1 for a list, 11 for ``frozenset({``). A ``repr`` of several lines
breaks the groups around it. Sequences show their first 1000 items, then ``...``, as IPython.

Objects with their own ``_repr_pretty_(p, cycle)`` get a printer with IPython's calls
(``text``, ``breakable``, ``break_``, ``pretty``, ``group``, ``begin_group``/``end_group``,
``indentation``). Anything else, or a printer that fails, reads as its ``repr()``.
"""

from __future__ import annotations

import builtins

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

MAX_WIDTH = 79
MAX_SEQ_LENGTH = 1000
# A hostile or huge result must not hold the task for long: past this many pieces of text
# the rest reads "...". (IPython has no such bound; no real result comes near it.)
MAX_PIECES = 200_000


class _Break:
    __slots__ = ("sep",)

    def __init__(self, sep: str) -> None:
        self.sep = sep


class _NewLine:  # a line break that always happens (within a repr of several lines)
    __slots__ = ()


class _Group:
    __slots__ = ("indent", "items", "forced")

    def __init__(self, indent: int) -> None:
        self.indent = indent
        self.items: list = []
        self.forced = False  # holds a _NewLine, here or in a group inside


class Printer:
    """Builds the tree (IPython's printer calls, for ``_repr_pretty_``), then writes it."""

    def __init__(self) -> None:
        self.root = _Group(0)
        self._open = [self.root]
        self._seen: set[int] = set()  # ids of the objects being written: a cycle reads [...]
        self._pieces = 0
        self.indentation = 0

    # -- IPython's calls ----------------------------------------------------------------
    def text(self, obj: str) -> None:
        self._pieces += 1
        self._open[-1].items.append(str(obj))

    def breakable(self, sep: str = " ") -> None:
        self._open[-1].items.append(_Break(sep))

    def break_(self) -> None:
        self._open[-1].items.append(_NewLine())
        for group in self._open:
            group.forced = True

    def begin_group(self, indent: int = 0, open: str = "") -> None:  # noqa: A002 (IPython's name)
        if open:
            self.text(open)
        group = _Group(indent)
        self._open[-1].items.append(group)
        self._open.append(group)
        self.indentation += indent

    def end_group(self, dedent: int = 0, close: str = "") -> None:
        self.indentation -= dedent
        if len(self._open) > 1:
            self._open.pop()
        if close:
            self.text(close)

    def group(self, indent: int = 0, open: str = "", close: str = "") -> "_GroupContext":  # noqa: A002
        return _GroupContext(self, indent, open, close)

    def pretty(self, obj: object) -> None:
        if self._pieces > MAX_PIECES:
            self.text("...")
            return
        cycle = id(obj) in self._seen  # as IPython: any object being written, met again inside itself
        self._seen.add(id(obj))
        try:
            _write(obj, self, cycle)
        finally:
            if not cycle:
                self._seen.discard(id(obj))

    # -- writing --------------------------------------------------------------------------
    def getvalue(self) -> str:
        out: list[str] = []
        column = 0
        # The work list, last first: (indentation, flat, item).
        work: list[tuple[int, bool, object]] = [(0, False, self.root)]
        while work:
            indent, flat, item = work.pop()
            if isinstance(item, str):
                out.append(item)
                column += len(item)
            elif isinstance(item, _Break):
                if flat:
                    out.append(item.sep)
                    column += len(item.sep)
                else:
                    out.append("\n" + " " * indent)
                    column = indent
            elif isinstance(item, _NewLine):
                out.append("\n" + " " * indent)
                column = indent
            else:
                group: _Group = item  # type: ignore[assignment]
                if not flat:  # the root too: text outside any group breaks only when too long
                    flat = not group.forced and _fits(MAX_WIDTH - column, group, work)
                work.extend((indent + group.indent, flat, child) for child in reversed(group.items))
        return "".join(out)


class _GroupContext:
    def __init__(self, printer: Printer, indent: int, open: str, close: str) -> None:  # noqa: A002
        self.printer, self.indent, self.open, self.close = printer, indent, open, close

    def __enter__(self) -> Printer:
        self.printer.begin_group(self.indent, self.open)
        return self.printer

    def __exit__(self, *exc: object) -> None:
        self.printer.end_group(self.indent, self.close)


def _fits(room: int, group: _Group, rest: list) -> bool:
    """``group`` on one line, with what follows it up to the next break that will be a new
    line (``rest``: the work list, last first), takes at most ``room`` columns."""
    def flat_items(items: list) -> Iterator[object]:
        for item in items:
            if isinstance(item, _Group):
                yield from flat_items(item.items)
            else:
                yield item

    for item in flat_items(group.items):
        room -= len(item) if isinstance(item, str) else len(item.sep) if isinstance(item, _Break) else room + 1
        if room < 0:
            return False
    for _indent, flat, item in reversed(rest):
        for piece in flat_items(item.items) if isinstance(item, _Group) else (item,):
            if isinstance(piece, str):
                room -= len(piece)
            elif isinstance(piece, _Break) and (flat or isinstance(item, _Group)):
                room -= len(piece.sep)
            else:  # a break that will be a new line: the line ends here
                return room >= 0
            if room < 0:
                return False
    return room >= 0


def pretty(obj: object) -> str:
    """``obj``'s text as IPython's pretty printer writes it (its ``repr()`` if that fails)."""
    printer = Printer()
    try:
        printer.pretty(obj)
        return printer.getvalue()
    except Exception:  # a broken __repr__ or _repr_pretty_ raises from repr() too: the caller says so
        return repr(obj)


# -- what each kind of object writes ---------------------------------------------------
def _write(obj: object, p: Printer, cycle: bool) -> None:
    """As IPython chooses: along the class's MRO, the first class that has a writer here,
    a ``_repr_pretty_`` or a ``__repr__`` of its own decides."""
    for base in type(obj).__mro__:
        writer = _WRITERS.get(base) or _BY_NAME.get((getattr(base, "__module__", None), base.__name__))
        if writer is not None:
            writer(obj, p, cycle)
            return
        own = vars(base)
        if callable(own.get("_repr_pretty_")):
            own["_repr_pretty_"](obj, p, cycle)
            return
        if base is not object and callable(own.get("__repr__")):
            _lines(repr(obj), p)
            return
    p.text(f"<{_type_name(type(obj))} at 0x{id(obj):x}>")  # object's own repr: IPython's short form


def _lines(text: str, p: Printer) -> None:
    """A repr of several lines: each on its own line, at the indentation it is in."""
    lines = text.splitlines()
    with p.group():
        for index, line in enumerate(lines):
            if index:
                p.break_()
            p.text(line)


def _items(p: Printer, values: Iterable[object]) -> Iterator[object]:
    for index, value in enumerate(values):
        if index:
            p.text(",")
            p.breakable()
        if index >= MAX_SEQ_LENGTH:
            p.text("...")
            return
        yield value


def _sequence(start: str, end: str) -> object:
    def write(obj: object, p: Printer, cycle: bool) -> None:
        if cycle:
            p.text(start + "..." + end)
            return
        with p.group(len(start), start, end):
            for value in _items(p, obj):  # type: ignore[arg-type]
                p.pretty(value)
            if type(obj) is tuple and len(obj) == 1:  # type: ignore[arg-type]
                p.text(",")
    return write


def _set(obj: object, p: Printer, cycle: bool) -> None:
    frozen = isinstance(obj, frozenset)
    if not obj:  # type: ignore[truthy-bool]
        p.text("frozenset()" if frozen else "set()")
        return
    start, end = ("frozenset({", "})") if frozen else ("{", "}")
    if cycle:
        p.text(start + "..." + end)
        return
    values = list(obj)  # type: ignore[call-overload]
    try:
        values.sort()
    except Exception:  # not comparable: as they come, as IPython leaves them
        pass
    with p.group(len(start), start, end):
        for value in _items(p, values):
            p.pretty(value)


def _dict(obj: object, p: Printer, cycle: bool) -> None:
    if cycle:
        p.text("{...}")
        return
    with p.group(1, "{", "}"):
        for key in _items(p, list(obj)):  # type: ignore[call-overload]
            p.pretty(key)
            p.text(": ")
            p.pretty(obj[key])  # type: ignore[index]


def _function(obj: object, p: Printer, cycle: bool) -> None:
    """``<function __main__.f(a, b=1)>``, as IPython names a function."""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
    module = getattr(obj, "__module__", None)
    if module not in (None, "builtins", "__builtin__"):
        name = f"{module}.{name}"
    try:
        import inspect

        signature = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        signature = ""
    p.text(f"<function {name}{signature}>")


def _called(p: Printer, name: str, cycle: bool, *parts: object) -> None:
    """``Name(part, part)``, as IPython writes the collections: each part pretty, a
    ``(text,)`` part as it is (``maxlen=5``)."""
    if cycle:
        p.text(f"{name}(...)")
        return
    with p.group(len(name) + 1, name + "(", ")"):
        for index, part in enumerate(parts):
            if index:
                p.text(",")
                p.breakable()
            if isinstance(part, tuple):
                p.text(part[0])
            else:
                p.pretty(part)


def _ordered_dict(obj: object, p: Printer, cycle: bool) -> None:
    items = list(obj.items())  # type: ignore[attr-defined]
    if not items:
        p.text(f"{type(obj).__name__}()")
    else:
        _called(p, type(obj).__name__, cycle, items)


def _counter(obj: object, p: Printer, cycle: bool) -> None:
    if not obj:
        p.text(f"{type(obj).__name__}()")
    else:
        _called(p, type(obj).__name__, cycle, dict(obj))  # type: ignore[call-overload]


def _default_dict(obj: object, p: Printer, cycle: bool) -> None:
    _called(p, type(obj).__name__, cycle, obj.default_factory, dict(obj))  # type: ignore[attr-defined,call-overload]


def _deque(obj: object, p: Printer, cycle: bool) -> None:
    maxlen = getattr(obj, "maxlen", None)
    values = list(obj)  # type: ignore[call-overload]
    if maxlen is not None:
        _called(p, type(obj).__name__, cycle, values, (f"maxlen={maxlen}",))
    else:
        _called(p, type(obj).__name__, cycle, values)


def _user_list(obj: object, p: Printer, cycle: bool) -> None:
    _called(p, type(obj).__name__, cycle, obj.data)  # type: ignore[attr-defined]


def _super(obj: object, p: Printer, cycle: bool) -> None:
    with p.group(8, "<super: ", ">"):
        p.pretty(getattr(obj, "__thisclass__", None))
        p.text(",")
        p.breakable()
        p.pretty(getattr(obj, "__self__", None))


# re's flags in the order IPython names them.
_RE_FLAGS = ("TEMPLATE", "IGNORECASE", "LOCALE", "MULTILINE", "DOTALL", "UNICODE", "VERBOSE", "DEBUG")


def _re_pattern(obj: object, p: Printer, cycle: bool) -> None:
    """``re.compile(r'a+', re.IGNORECASE|re.UNICODE)``: the pattern as a raw string, then
    its flags by name."""
    import re

    with p.group(len("re.compile("), "re.compile(", ")"):
        p.text("r" + repr(obj.pattern).replace("\\\\", "\\"))  # type: ignore[attr-defined]  # rb'..' for bytes
        flags = obj.flags  # type: ignore[attr-defined]
        if flags:
            p.text(",")
            p.breakable()
            p.text("|".join(f"re.{name}" for name in _RE_FLAGS if flags & getattr(re, name, 0)))


def _type_name(cls: type) -> str:
    module, name = getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)
    if not isinstance(name, str):
        name = getattr(cls, "__name__", "?")
    return name if module in (None, "builtins") or not isinstance(module, str) else f"{module}.{name}"


def _repr_text(obj: object, p: Printer, cycle: bool) -> None:
    p.text(repr(obj))


def _type(obj: object, p: Printer, cycle: bool) -> None:
    p.text(_type_name(obj))  # type: ignore[arg-type]


def _float(obj: object, p: Printer, cycle: bool) -> None:
    """A float as ``%precision`` set it (the shell's ``float_format``), everywhere in the text."""
    shell = getattr(builtins, "get_ipython", None)
    float_format = getattr(shell() if callable(shell) else None, "float_format", "%r")
    try:
        p.text(repr(obj) if float_format == "%r" else float_format % obj)
    except (TypeError, ValueError):
        p.text(repr(obj))


_WRITERS: dict = {
    list: _sequence("[", "]"), tuple: _sequence("(", ")"), dict: _dict, set: _set, frozenset: _set,
    int: _repr_text, float: _float, str: _repr_text, bytes: _repr_text, bool: _repr_text, type: _type,
    type(_type_name): _function, type(len): _function, super: _super,
}


# By module and name: the classes of modules this file does not import.
_BY_NAME: dict = {("collections", "OrderedDict"): _ordered_dict, ("collections", "Counter"): _counter,
                  ("collections", "defaultdict"): _default_dict, ("collections", "deque"): _deque,
                  ("collections", "UserList"): _user_list, ("re", "Pattern"): _re_pattern}
