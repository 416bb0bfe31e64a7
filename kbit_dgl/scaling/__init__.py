"""Scaling analysis: power-law fits with uncertainties, bit-optimal frontiers, plots, and the sweeps.

``fit.py`` fits y = a * x**-b (+ c) with scipy and validates a fit by predicting its largest-x
point; ``frontier.py`` turns sweep points (dim, bits, dtype, block, seed, total bits, MRR) into
the bit-optimal configuration per memory budget; ``plots.py`` draws both (matplotlib, Agg);
``metrics.py`` computes the quality numbers the sweeps record. ``runs.py`` trains or reuses the
sweeps' runs; ``kbit.py`` quantises one trained model per spec. The k-bit sweep is
``kbit_sweep.py`` (runs and points) + ``kbit_report.py`` (frontiers, figures, README); the
scaling-law sweep is ``law_sweep.py`` (the dim / data / steps axes) + ``law_report.py`` (fits,
figures, README). Nothing here imports DGL.
"""
from .fit import FitResult, fit_power_law, holdout_error, power_law, saturating_power_law  # noqa: F401
from .frontier import aggregate_points, bit_optimal_table, budget_grid, frontier_summary  # noqa: F401
