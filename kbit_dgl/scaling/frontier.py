"""The bits-vs-quality frontier: which (dim, k) is best at a given memory budget.

A sweep point is a dict with at least ``dim``, ``bits``, ``dtype``, ``block``, ``seed``,
``total_bits`` (entity + relation tables: codes, scales and metadata) and a quality metric
(``mrr`` by default). :func:`aggregate_points` averages seeds per configuration;
:func:`bit_optimal_table` picks, for each budget of a log-spaced grid, the configuration with the
best mean metric among those whose total bits fit the budget, next to the best configuration with
a different k and the best 4-bit one, so the margins can be read against the seed noise.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

CONFIG_KEYS = ("dim", "bits", "dtype", "block")


def aggregate_points(points: Iterable[Dict], metric: str = "mrr", keys: Sequence[str] = CONFIG_KEYS) -> List[Dict]:
    """One row per configuration (``keys``): ``mean``, ``std`` (ddof 1; 0 for one seed), ``sem``,
    ``num_seeds``, ``seeds`` and ``total_bits`` (the largest over seeds; they agree for one
    configuration), sorted by total bits then mean."""
    groups: Dict[tuple, List[Dict]] = defaultdict(list)
    for point in points:
        groups[tuple(point[key] for key in keys)].append(point)
    rows = []
    for config, members in groups.items():
        values = np.array([float(p[metric]) for p in members])
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        rows.append({**dict(zip(keys, config)), "mean": float(values.mean()), "std": std,
                     "sem": std / math.sqrt(len(values)), "num_seeds": len(values),
                     "seeds": sorted(p.get("seed") for p in members),
                     "total_bits": max(int(p["total_bits"]) for p in members)})
    return sorted(rows, key=lambda row: (row["total_bits"], -row["mean"]))


def pareto_front(rows: Sequence[Dict]) -> List[Dict]:
    """Aggregated rows no cheaper-or-equal row beats: sorted by total bits, each better than all before."""
    front, best = [], -math.inf
    for row in sorted(rows, key=lambda r: (r["total_bits"], -r["mean"])):
        if row["mean"] > best:
            front.append(row)
            best = row["mean"]
    return front


def budget_grid(total_bits: Sequence[float], per_octave: int = 1) -> List[float]:
    """Budgets 2**(i / per_octave) from the smallest configuration's bits (rounded up onto the
    grid) to the largest (rounded up too, so the largest configuration fits the last budget)."""
    low, high = math.log2(min(total_bits)), math.log2(max(total_bits))
    first, last = math.ceil(low * per_octave), math.ceil(high * per_octave)
    return [2.0 ** (i / per_octave) for i in range(first, last + 1)]


def _difference_sigmas(best: Dict, other: Dict) -> Optional[float]:
    """(best - other) in standard errors of the difference; None without seed noise to compare to,
    which includes a side with a single seed (its noise is unknown, not zero)."""
    if min(best["num_seeds"], other["num_seeds"]) < 2:
        return None
    error = math.sqrt(best["sem"] ** 2 + other["sem"] ** 2)
    return (best["mean"] - other["mean"]) / error if error > 0 else None


def _best(rows: Iterable[Dict]) -> Optional[Dict]:
    rows = list(rows)
    return max(rows, key=lambda row: (row["mean"], -row["total_bits"])) if rows else None


def bit_optimal_table(points: Iterable[Dict], budgets: Optional[Sequence[float]] = None, metric: str = "mrr",
                      per_octave: int = 1, keys: Sequence[str] = CONFIG_KEYS) -> List[Dict]:
    """For each budget (default :func:`budget_grid`): the best configuration within it.

    Each row: ``budget_bits``; the winner's ``keys``, ``mean``, ``std``, ``num_seeds``,
    ``total_bits``; ``other_k`` (the best configuration with a different k) with ``margin`` =
    winner mean - its mean and ``margin_sigmas`` (margin over the standard error of the
    difference, None for single seeds); ``best_4bit`` and ``gap_4bit`` likewise (None when no
    4-bit configuration fits). Budgets below every configuration are left out.
    """
    rows = aggregate_points(points, metric, keys)
    if not rows:
        return []
    budgets = budget_grid([row["total_bits"] for row in rows], per_octave) if budgets is None else budgets
    table = []
    for budget in budgets:
        fitting = [row for row in rows if row["total_bits"] <= budget]
        winner = _best(fitting)
        if winner is None:
            continue
        other = _best(row for row in fitting if row["bits"] != winner["bits"])
        four = _best(row for row in fitting if row["bits"] == 4)
        entry = {"budget_bits": float(budget), **{key: winner[key] for key in keys},
                 "mean": winner["mean"], "std": winner["std"], "num_seeds": winner["num_seeds"],
                 "total_bits": winner["total_bits"], "other_k": other,
                 "margin": None if other is None else winner["mean"] - other["mean"],
                 "margin_sigmas": None if other is None else _difference_sigmas(winner, other),
                 "best_4bit": four, "gap_4bit": None if four is None else winner["mean"] - four["mean"],
                 "gap_4bit_sigmas": None if four is None else _difference_sigmas(winner, four)}
        table.append(entry)
    return table


def frontier_summary(table: Sequence[Dict], significance: float = 2.0) -> Dict[str, object]:
    """Counts over the budgets of a :func:`bit_optimal_table`.

    ``wins_by_bits``: budgets each k wins; ``four_bit_wins``; ``four_bit_tied``: budgets where
    4 bits loses by less than ``significance`` standard errors (or not at all); ``clear_wins``:
    budgets where the winner beats every other k by at least ``significance`` standard errors;
    ``most_frequent_bits``; ``budgets``: the number of rows; ``seeded``: whether error bars exist.
    """
    wins: Dict[int, int] = defaultdict(int)
    four_tied = clear = 0
    for row in table:
        wins[int(row["bits"])] += 1
        sigmas = row["gap_4bit_sigmas"]
        if row["bits"] == 4 or (row["best_4bit"] is not None and sigmas is not None and sigmas < significance):
            four_tied += 1
        if row["margin_sigmas"] is not None and row["margin_sigmas"] >= significance:
            clear += 1
    most = max(sorted(wins), key=lambda bits: wins[bits]) if wins else None
    return {"budgets": len(table), "wins_by_bits": dict(sorted(wins.items())), "most_frequent_bits": most,
            "four_bit_wins": wins.get(4, 0), "four_bit_tied": four_tied, "clear_wins": clear,
            "significance_sigmas": significance,
            "seeded": any(row["num_seeds"] > 1 for row in table)}


def format_bits(bits: float) -> str:
    """A bit count as readable bytes, e.g. ``2^20 (128 KiB)``."""
    exponent = math.log2(bits) if bits > 0 else 0.0
    power = f"2^{exponent:.0f}" if abs(exponent - round(exponent)) < 1e-9 else f"2^{exponent:.1f}"
    size = bits / 8
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{power} ({size:.3g} {unit})"
        size /= 1024
    raise AssertionError("unreachable")
