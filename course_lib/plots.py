"""Small plotting helpers so every notebook's figures look alike and always carry units.

Three helpers cover most of the course's figures; each draws on a matplotlib ``Axes`` (a new
one when ``ax`` is None) and returns it, so a notebook can still add titles, lines or notes::

    use_course_style()                                  # once per notebook
    bar(labels, values, xlabel=..., ylabel=...)         # one number per label
    grouped_bar(groups, {"series": values}, ...)        # a few numbers per group, side by side
    line(x, {"series": ys}, xlabel=..., ylabel=...)     # curves over a shared x axis

Axis labels are required (keyword-only): a figure without units is a figure nobody can read.
Write the unit in brackets, e.g. ``ylabel="memory [GB]"`` or ``ylabel="probability"`` for a
unitless quantity.

Example
-------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> ax = bar(["fp32", "bf16"], [4.0, 2.0], xlabel="format", ylabel="bytes per weight [B]")
>>> [float(p.get_height()) for p in ax.patches]
[4.0, 2.0]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

__all__ = ["COLORS", "use_course_style", "bar", "grouped_bar", "line"]

# Colour-blind-safe palette (Okabe & Ito 2008), in the order series are drawn.
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")

_STYLE = {
    "figure.figsize": (7.0, 3.8),
    "figure.dpi": 100,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.frameon": False,
    "font.size": 10,
}


def use_course_style() -> None:
    """Apply the course's matplotlib style (light grid, no top/right spines, the palette)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(_STYLE)
    mpl.rcParams["axes.prop_cycle"] = cycler(color=list(COLORS))


def _check_label(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(
            f"{name} must be a non-empty str naming the quantity and its unit, "
            f"e.g. 'memory [GB]'; got {value!r}"
        )
    return value


def _numbers(name: str, values, n: int | None = None) -> list[float]:
    """``values`` as a list of finite-or-nan floats (tensors and arrays welcome)."""
    if hasattr(values, "tolist"):  # torch tensors, numpy arrays
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # 0-d tensor or numpy scalar
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name}[{i}] must be a number, got {v!r} ({type(v).__name__})")
        out.append(float(v))
    if not out:
        raise ValueError(f"{name} is empty: nothing to plot")
    if n is not None and len(out) != n:
        raise ValueError(
            f"{name} has {len(out)} values but there are {n} labels/points; give one value per label"
        )
    return out


def _labels(name: str, labels) -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or not labels:
        raise TypeError(f"{name} must be a non-empty list of labels, got {labels!r}")
    return [str(x) for x in labels]


def _axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax


def _fmt(v: float) -> str:
    """A bar's value label: 3 significant digits, thousands as 1,620, tiny/huge in e-notation."""
    if math.isnan(v):
        return "nan"
    if 1e3 <= abs(v) < 1e6:
        return f"{v:,.0f}"
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-2):
        return f"{v:.2g}"
    return f"{v:.3g}"


def bar(
    labels,
    values,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    ax=None,
    horizontal: bool = False,
    annotate: bool = True,
    log: bool = False,
    color=None,
):
    """One bar per label.

    Parameters
    ----------
    labels : sequence of str, length n
    values : sequence of numbers (list, tensor or array), length n
    xlabel, ylabel : str
        Axis labels with units. With ``horizontal=True`` the bars run along x, so ``xlabel``
        names the values and ``ylabel`` the labels.
    title : str or None
    ax : matplotlib Axes or None (new figure)
    horizontal : bool
        Horizontal bars (best for long labels such as tokens or sentences), first label on top.
    annotate : bool
        Write each value at the end of its bar.
    log : bool
        Logarithmic value axis (for values spanning orders of magnitude).
    color : a matplotlib colour, a list of n colours, or None (the first palette colour)

    Returns
    -------
    The matplotlib ``Axes``.
    """
    labels = _labels("labels", labels)
    vals = _numbers("values", values, len(labels))
    _check_label("xlabel", xlabel)
    _check_label("ylabel", ylabel)
    if log and any(v <= 0 for v in vals):
        raise ValueError(f"log=True needs positive values, got {min(vals)}")
    ax = _axes(ax)
    color = COLORS[0] if color is None else color
    if horizontal:
        pos = list(range(len(labels)))[::-1]  # first label on top, as it is read
        bars = ax.barh(pos, vals, color=color)
        ax.set_yticks(pos, labels)
        ax.grid(axis="y", visible=False)
        ax.grid(axis="x", visible=True, alpha=0.3)
        if log:
            ax.set_xscale("log")
    else:
        bars = ax.bar(range(len(labels)), vals, color=color)
        ax.set_xticks(
            range(len(labels)),
            labels,
            rotation=30 if max(map(len, labels)) > 8 else 0,
            ha="right" if max(map(len, labels)) > 8 else "center",
        )
        if log:
            ax.set_yscale("log")
    if annotate:
        ax.bar_label(bars, labels=[_fmt(v) for v in vals], padding=2, fontsize=8)
        # leave room for the labels at the end of the longest bar
        if not log and max(vals) > 0:
            lo, hi = ax.get_xlim() if horizontal else ax.get_ylim()
            (ax.set_xlim if horizontal else ax.set_ylim)(lo, hi * 1.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


def grouped_bar(
    groups,
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    ax=None,
    annotate: bool = True,
    log: bool = False,
):
    """Several series side by side for each group (e.g. token counts per sentence per tokenizer).

    Parameters
    ----------
    groups : sequence of str, length n (the x tick labels)
    series : dict ``{series name: n values}`` (drawn in dict order, one colour each, legend)
    xlabel, ylabel, title, ax, annotate, log : as in :func:`bar`

    Returns
    -------
    The matplotlib ``Axes``.
    """
    groups = _labels("groups", groups)
    if not isinstance(series, Mapping) or not series:
        raise TypeError(f"series must be a non-empty dict {{name: values}}, got {type(series).__name__}")
    data = {str(k): _numbers(f"series[{k!r}]", v, len(groups)) for k, v in series.items()}
    _check_label("xlabel", xlabel)
    _check_label("ylabel", ylabel)
    ax = _axes(ax)
    k = len(data)
    width = 0.8 / k
    for j, (name, vals) in enumerate(data.items()):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(groups))]
        bars = ax.bar(xs, vals, width=width, label=name, color=COLORS[j % len(COLORS)])
        if annotate:
            ax.bar_label(bars, labels=[_fmt(v) for v in vals], padding=1, fontsize=7)
    long = max(map(len, groups)) > 8
    ax.set_xticks(range(len(groups)), groups, rotation=25 if long else 0, ha="right" if long else "center")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def line(
    x,
    ys,
    *,
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    ax=None,
    logx: bool = False,
    logy: bool = False,
    marker: str | None = None,
):
    """Curves over a shared x axis (loss curves, memory vs size, ...).

    Parameters
    ----------
    x : sequence of numbers, length n
    ys : sequence of n numbers (one unnamed curve) or dict ``{name: n numbers}`` (with legend)
    xlabel, ylabel, title, ax : as in :func:`bar`
    logx, logy : bool
        Logarithmic axes.
    marker : matplotlib marker such as "o", or None

    Returns
    -------
    The matplotlib ``Axes``.
    """
    xs = _numbers("x", x)
    curves = (
        {str(k): _numbers(f"ys[{k!r}]", v, len(xs)) for k, v in ys.items()}
        if isinstance(ys, Mapping)
        else {"": _numbers("ys", ys, len(xs))}
    )
    if not curves:
        raise ValueError("ys is an empty dict: nothing to plot")
    _check_label("xlabel", xlabel)
    _check_label("ylabel", ylabel)
    ax = _axes(ax)
    for j, (name, vals) in enumerate(curves.items()):
        ax.plot(xs, vals, label=name or None, marker=marker, color=COLORS[j % len(COLORS)])
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if any(curves):
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax
