"""Matplotlib figures of the sweeps: the bits-vs-MRR frontier and scaling curves with fitted laws.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no display,
no global state) and written atomically as PNG.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Iterable, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ..io import _atomic  # noqa: E402
from .fit import FitResult  # noqa: E402
from .frontier import aggregate_points, pareto_front  # noqa: E402

Series = Tuple[Sequence[float], Sequence[float], Optional[Sequence[float]]]  # x, y, y error (or None)


def new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _power_of_two(value: float, _position=None) -> str:
    exponent = math.log2(value) if value > 0 else 0.0
    return f"2^{exponent:.0f}" if abs(exponent - round(exponent)) < 1e-6 else ""


def log2_xaxis(axes) -> None:
    """Log-2 x scale with ticks labelled as plain text ``2^k`` (no mathtext: faster, no parser)."""
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(LogLocator(base=2, numticks=12))
    axes.xaxis.set_major_formatter(FuncFormatter(_power_of_two))
    axes.xaxis.set_minor_formatter(NullFormatter())


def save_figure(figure: Figure, path: str) -> None:
    """Write ``figure`` to ``path`` as PNG, atomically."""
    figure.tight_layout()
    _atomic(path, lambda stream: figure.savefig(stream, format="png"))


def frontier_plot(points: Iterable[Dict], path: str, title: str = "", metric: str = "mrr",
                  ylabel: str = "test MRR (filtered)") -> None:
    """``metric`` against total model bits (log2 x axis), one curve per k through the dims, error
    bars = standard deviation over seeds, and the Pareto envelope over all points (dashed).

    ``points``: sweep points of one dataset, model and data type (16 / 32-bit points included),
    with ``dim``, ``bits``, ``seed``, ``total_bits`` and ``metric``.
    """
    rows = aggregate_points(points, metric, keys=("dim", "bits"))
    figure = new_figure()
    axes = figure.add_subplot()
    by_bits = defaultdict(list)
    for row in rows:
        by_bits[row["bits"]].append(row)
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.92, max(len(by_bits), 1)))
    for color, bits in zip(colors, sorted(by_bits)):
        curve = sorted(by_bits[bits], key=lambda row: row["dim"])
        axes.errorbar([r["total_bits"] for r in curve], [r["mean"] for r in curve], yerr=[r["std"] for r in curve],
                      marker="o", markersize=3.5, capsize=2.5, linewidth=1.2, color=color, label=f"k={bits}")
    front = pareto_front(rows)
    if front:
        axes.plot([r["total_bits"] for r in front], [r["mean"] for r in front], linestyle="--", color="0.45",
                  linewidth=0.9, label="best at budget", zorder=0)
    log2_xaxis(axes)
    axes.set_xlabel("total model bits (entity + relation tables, codes + scales + metadata)")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    save_figure(figure, path)


def series_plot(series: Dict[str, Series], path: str, xlabel: str, ylabel: str, title: str = "",
                logx: bool = True) -> None:
    """One line with error bars per label (e.g. MRR against block size per data type)."""
    figure = new_figure()
    axes = figure.add_subplot()
    for label, (x, y, error) in series.items():
        axes.errorbar(x, y, yerr=error, marker="o", markersize=3.5, capsize=2.5, linewidth=1.2, label=label)
    if logx:
        log2_xaxis(axes)
    _finish(figure, axes, path, xlabel, ylabel, title, legend_size=8)


def scaling_plot(x: Sequence[float], y: Sequence[float], path: str, xlabel: str, ylabel: str, title: str = "",
                 fits: Optional[Dict[str, FitResult]] = None, heldout_x: Optional[float] = None,
                 logy: bool = False) -> None:
    """Measured points (one per seed, light), their means with standard deviations, and fitted
    laws as smooth curves over (and a little beyond) the measured x range; ``heldout_x`` marks the
    point the validation fit did not see."""
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    figure = new_figure()
    axes = figure.add_subplot()
    axes.scatter(x_arr, y_arr, s=10, color="0.6", label="seeds", zorder=2)
    levels = np.unique(x_arr)
    means = np.array([y_arr[x_arr == level].mean() for level in levels])
    stds = np.array([y_arr[x_arr == level].std(ddof=1) if (x_arr == level).sum() > 1 else 0.0 for level in levels])
    axes.errorbar(levels, means, yerr=stds, fmt="o", color="black", markersize=4, capsize=3, label="mean ± std",
                  zorder=3)
    grid = np.geomspace(levels.min() / 1.3, levels.max() * 2.0, 200)
    for (label, fit), style in zip((fits or {}).items(), ("-", "--", ":", "-.")):
        axes.plot(grid, fit.predict(grid), linestyle=style, linewidth=1.3, label=f"{label}: {fit.formula(2)}")
    if heldout_x is not None:
        axes.axvline(heldout_x, color="tab:red", alpha=0.3, linewidth=4, label="held out in validation")
    log2_xaxis(axes)
    if logy:
        axes.set_yscale("log")
    _finish(figure, axes, path, xlabel, ylabel, title, legend_size=7)


def _finish(figure, axes, path: str, xlabel: str, ylabel: str, title: str, legend_size: int) -> None:
    """Labels, title, grid and legend as every plot here has them, then save atomically."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=legend_size)
    save_figure(figure, path)
