"""matplotlib's figures in the task process, shown as Jupyter's inline backend shows them.

Loaded with ``displays.py`` (by ``bootstrap.py``, which gives this module ``display`` and
``say`` from there), only once a task displays something or imports matplotlib. Here: a
figure drawn to PNG as IPython's ``print_figure`` draws it, ``plt.show()`` and a cell's end
showing the open figures, the backend a task chooses followed (after ``matplotlib.use('Agg')``
no figure is shown until the run's end), and the hooks ``bootstrap.py`` runs around the
imports of matplotlib, pyplot and matplotlib_inline.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _unbound(*args: object, **kwargs: object) -> None:
    raise RuntimeError("displays_figures.py is used through displays.py, whose functions bootstrap.py gives it")


# displays.py's, set by bootstrap.py when it loads both.
display: Callable[..., object] = _unbound
say: Callable[[str], None] = _unbound
failed: Callable[[str, BaseException], None] = _unbound


def is_figure(obj: object) -> bool:
    figure_module = sys.modules.get("matplotlib.figure")
    return figure_module is not None and isinstance(obj, getattr(figure_module, "Figure", ()))


# How the task asked Jupyter's inline backend to show a figure: IPython's formats (png,
# retina: a PNG at twice the dpi, jpeg, svg, pdf) and the keyword arguments of its
# print_figure. Set by ``%config InlineBackend.figure_format(s) / print_figure_kwargs``
# (matplotlib_inline's configuration, kept in ``_configured``) and by
# ``set_matplotlib_formats``, which changes what is shown but not that configuration.
FORMATS = ("png", "png2x", "retina", "jpg", "jpeg", "svg", "pdf")
_formats: frozenset = frozenset({"png"})
_print_kwargs: dict = {"bbox_inches": "tight"}
_configured: dict = {"figure_formats": frozenset({"png"}), "print_figure_kwargs": {"bbox_inches": "tight"}}


def select_formats(formats: object, **kwargs: object) -> None:
    """IPython's ``select_figure_formats``: figures are shown from now on in ``formats`` (a
    name or several; none: as text only), printed with ``kwargs``. An unknown format is
    refused in IPython's words, before anything changes."""
    global _formats, _print_kwargs
    chosen = {formats} if isinstance(formats, str) else set(formats)  # type: ignore[call-overload]
    bad = chosen.difference(FORMATS)
    if bad:
        raise ValueError(f"supported formats are: {','.join(repr(f) for f in FORMATS)} not "
                         f"{','.join(repr(f) for f in sorted(bad, key=str))}")
    _formats, _print_kwargs = frozenset(chosen), dict(kwargs)


def configure_inline(name: str, value: object) -> None:
    """``%config InlineBackend.NAME = value`` for the settings followed (figure_format,
    figure_formats, print_figure_kwargs, rc): as matplotlib_inline's configuration takes it,
    each change of format or keyword arguments selects the formats again with both."""
    if name == "figure_format":  # (deprecated there) one format
        if not value:
            return
        name, value = "figure_formats", {value}
    if name == "figure_formats":
        formats = {value} if isinstance(value, str) else set(value)  # type: ignore[call-overload]
        select_formats(formats, **_configured["print_figure_kwargs"])
        _configured["figure_formats"] = frozenset(formats)
    elif name == "rc":  # matplotlib settings for the figures to come (figure.figsize...), as the inline backend's
        if not isinstance(value, dict):
            raise TypeError(f"InlineBackend.rc must be a dict, not {type(value).__name__}")
        import matplotlib

        matplotlib.rcParams.update(value)
    elif name == "print_figure_kwargs":
        if not isinstance(value, dict):
            raise TypeError(f"InlineBackend.print_figure_kwargs must be a dict, not {type(value).__name__}")
        select_formats(_configured["figure_formats"], **value)
        _configured["print_figure_kwargs"] = dict(value)
    else:
        raise ValueError(f"InlineBackend.{name} is not followed by peach-tasks")


def figure_bundle(figure: object) -> dict:
    """The figure's representations as Jupyter's inline backend makes them in the formats
    chosen (``select_formats``; PNG unless the task chose): {} for an empty figure, or one
    that could not be drawn (the log says why)."""
    if not getattr(figure, "axes", None) and not getattr(figure, "lines", None):
        return {}
    bundle: dict = {}
    try:
        if "png" in _formats:
            bundle["image/png"] = _printed(figure, "png")
        if "retina" in _formats or "png2x" in _formats:  # the same formatter as png's, in IPython
            bundle["image/png"] = _printed(figure, "retina")
        if "jpg" in _formats or "jpeg" in _formats:
            bundle["image/jpeg"] = _printed(figure, "jpg")
        if "svg" in _formats:
            bundle["image/svg+xml"] = _printed(figure, "svg").decode("utf-8")
        if "pdf" in _formats:
            bundle["application/pdf"] = _printed(figure, "pdf")
    except Exception as exc:  # Jupyter shows the traceback in the cell; the run fails at its end
        failed("drawing a figure", exc)
        return {}
    return bundle


def _printed(figure: object, fmt: str) -> bytes:
    """The figure printed as IPython's ``print_figure`` prints it: at the figure's own dpi
    (twice it for retina) and colours, so the ``savefig.*`` settings a notebook sets for its
    files (``savefig.dpi = 300``, a transparent background) do not apply to what it shows;
    ``bbox_inches="tight"`` unless the task's print_figure_kwargs say otherwise."""
    import io

    fig: Any = figure  # matplotlib's Figure, which this file does not import
    kwargs = dict(_print_kwargs)
    dpi = fig.dpi * 2 if fmt == "retina" else fig.dpi
    options = {"format": "png" if fmt == "retina" else fmt, "facecolor": fig.get_facecolor(),
               "edgecolor": fig.get_edgecolor(), "dpi": dpi, "bbox_inches": kwargs.pop("bbox_inches", "tight")}
    options.update(kwargs)
    if fig.canvas is None:
        from matplotlib.backend_bases import FigureCanvasBase

        FigureCanvasBase(fig)
    buffer = io.BytesIO()
    fig.canvas.print_figure(buffer, **options)
    return buffer.getvalue()


# Figures are shown as outputs, by plt.show() and at a cell's end, as Jupyter's inline backend
# shows them; until the task chooses another backend (matplotlib.use('Agg'), %matplotlib agg):
# in Jupyter no figure is shown after that, and one stays open for a later cell to save.
_inline = True
_INLINE_NAMES = frozenset({"inline", "module://matplotlib_inline.backend_inline",
                           "module://ipykernel.pylab.backend_inline"})
_backend_show = None  # pyplot's own show(), for a backend the task chose


def _chose_backend(name: object) -> bool:
    """The task chose backend ``name``; True: Jupyter's inline one, which is ours already (the
    call goes no further: matplotlib_inline's backend needs a kernel)."""
    global _inline
    _inline = str(name).lower() in _INLINE_NAMES
    return _inline


def show(*args: object, **kwargs: object) -> None:
    """``plt.show()``: every open figure becomes an output, then they are closed (as inline);
    with a backend the task chose, that backend's show (Agg's warns it cannot show)."""
    if _inline or _backend_show is None:
        flush_figures()
    else:
        _backend_show(*args, **kwargs)


def flush_figures(at_end: bool = False, cell_end: bool = False) -> None:
    """Show the figures still open and close them (at ``plt.show()``, a cell's end and the
    run's end). Once the task chose a backend other than inline, only at the run's end: a
    figure stays open for a later cell (and the run keeps what it left open, as it ever did).
    At a cell's end, not a figure made with interactive mode off (``plt.ioff()``, ``with
    plt.ioff():``), which Jupyter's inline backend leaves open, unshown, until ``plt.show()``."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None or not (_inline or at_end):
        return
    try:
        from matplotlib._pylab_helpers import Gcf

        figures = [manager.canvas.figure for manager in Gcf.get_all_fig_managers()]
    except Exception as exc:
        say(f"peach-tasks: the open figures could not be listed: {exc!r}")
        return
    if cell_end:
        figures = [figure for figure in figures if not getattr(figure, _MADE_WITH_IOFF, False)]
    try:
        for figure in figures:
            display(figure)
    finally:
        try:
            if cell_end:
                for figure in figures:
                    pyplot.close(figure)
            else:
                pyplot.close("all")
        except Exception:
            pass


_MADE_WITH_IOFF = "_peach_tasks_made_with_ioff"  # a figure pyplot made while interactive mode was off


def before_pyplot(matplotlib: object) -> None:
    """Choose the Agg backend before pyplot loads, unless the task or its environment chose
    one: a scheduled task has no screen, and a GUI backend must not be tried."""
    if os.environ.get("MPLBACKEND"):
        return
    try:
        params = matplotlib.rcParams  # type: ignore[attr-defined]
        from matplotlib import rcsetup

        if dict.__getitem__(params, "backend") is getattr(rcsetup, "_auto_backend_sentinel", None):
            params["backend"] = "agg"
    except Exception:  # another matplotlib than expected: its own choice stands
        pass


def after_pyplot(pyplot: object) -> None:
    """pyplot as Jupyter's inline backend leaves it: interactive mode on (a cell's figures are
    shown at its end, ``plt.ioff()`` turns that off), ``show`` showing the figures as outputs,
    ``switch_backend`` following the task's choice."""
    global _backend_show
    _backend_show = getattr(pyplot, "show", None)
    pyplot.show = show  # type: ignore[attr-defined]
    matplotlib = sys.modules.get("matplotlib")
    figure = getattr(pyplot, "figure", None)
    if matplotlib is not None and callable(figure):
        try:
            matplotlib.interactive(True)  # type: ignore[attr-defined]
        except Exception:  # another matplotlib than expected
            pass
        import functools

        @functools.wraps(figure)
        def noting_figure(*args: object, **kwargs: object) -> object:
            made = figure(*args, **kwargs)
            if not matplotlib.is_interactive():  # type: ignore[attr-defined]
                try:
                    setattr(made, _MADE_WITH_IOFF, True)
                except Exception:
                    pass
            return made

        pyplot.figure = noting_figure  # type: ignore[attr-defined]
    switch = getattr(pyplot, "switch_backend", None)
    package = os.path.dirname(getattr(pyplot, "__file__", "") or "")
    if callable(switch) and package:
        def switch_backend(newbackend: str) -> None:
            # A call from matplotlib itself (pyplot resolving its default backend, its list of
            # candidates, matplotlib.use, whose own call is noted) is not the task's choice.
            if not sys._getframe(1).f_code.co_filename.startswith(package + os.sep) \
                    and _chose_backend(newbackend):
                return None
            return switch(newbackend)

        pyplot.switch_backend = switch_backend  # type: ignore[attr-defined]


# Where the scheduler put matplotlib's font list when it built the environment
# (environment_files.MATPLOTLIB_SEED, under the environment's prefix).
FONT_LIST_SEED = os.path.join("share", "peach-tasks", "matplotlib")


def after_matplotlib(matplotlib: object) -> None:
    """``matplotlib.use`` noted as the task's choice of backend (``_chose_backend``), and
    matplotlib given the font list built with the environment, before it looks for one: a
    sandboxed run's ``HOME`` is new and empty, and scanning the system's fonts again would
    cost every run about half a second. Only a missing list is copied; ``MPLCONFIGDIR`` set
    by the task's environment is left alone."""
    use = getattr(matplotlib, "use", None)
    if callable(use):
        def chosen_use(backend: str, *args: object, **kwargs: object) -> None:
            if _chose_backend(backend):
                return None
            return use(backend, *args, **kwargs)

        matplotlib.use = chosen_use  # type: ignore[attr-defined]
    if os.environ.get("MPLCONFIGDIR"):
        return
    seed = os.path.join(sys.prefix, FONT_LIST_SEED)
    try:
        names = [n for n in os.listdir(seed) if n.startswith("fontlist-") and n.endswith(".json")]
        if not names:
            return
        cache = matplotlib.get_cachedir()  # type: ignore[attr-defined]
        import shutil

        for name in names:
            if not os.path.exists(os.path.join(cache, name)):
                shutil.copyfile(os.path.join(seed, name), os.path.join(cache, name))
    except Exception:  # no seed, an unwritable cache, another matplotlib: it builds its own list
        return


def after_matplotlib_inline(module: object) -> None:
    """``set_matplotlib_formats('svg')`` (matplotlib_inline's, which IPython's deprecated one
    calls) is followed as there: the formats chosen, with the configured print_figure_kwargs
    and the call's own."""
    def set_matplotlib_formats(*formats: object, **kwargs: object) -> None:
        select_formats(formats, **{**_configured["print_figure_kwargs"], **kwargs})

    module.set_matplotlib_formats = set_matplotlib_formats  # type: ignore[attr-defined]


AFTER_IMPORT = {"matplotlib": after_matplotlib, "matplotlib.pyplot": after_pyplot,
                "matplotlib_inline.backend_inline": after_matplotlib_inline}
