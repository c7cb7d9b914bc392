"""Benchmarks: ``python -m alignment_dynamics.bench embed|dpo [options]``.

* ``embed``: the official embedding loop against ours (``alignment_dynamics.bench.embed``).
* ``dpo``: the DPO kernels against the field (``alignment_dynamics.bench.dpo``).

Each writes a JSON object with ``--json PATH`` (``-`` for the last line of standard output).
"""
