"""Helpers of the benchmark pipelines (``pipelines/bench_*.py``, ``foundation.py``, ``rgcn.py``).

``timing.py``: best-of-n timings, the machine's matmul rate and its load average around a run;
``memory.py``: resident memory of this process; ``workloads.py``: random KGs of a given size;
``steps.py``: the time of the trainer's own step as the entity count grows; ``peers.py``: the
summary and table of the peer comparison; ``tables.py``: the README tables of the foundation and
R-GCN results, rendered from their per-run JSON files; ``standin.py``: the cost of loading the
wikikg2 stand-in (in a child process, with a memory limit) and its README table.
"""
