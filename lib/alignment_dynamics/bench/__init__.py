"""Benchmarks: ``python -m alignment_dynamics.bench embed|dpo [options]``.

* ``embed``: the official embedding loop against ours (``alignment_dynamics.bench.embed``).
* ``dpo``: the DPO kernels against the field (the command line: ``alignment_dynamics.bench.dpo``): the
  CPU part (``dpo_cpu``), the GPU part (``dpo_gpu``), their shared sizes and inputs (``dpo_common``),
  the correctness checks (``dpo_checks``) and what the kernels chapter shows of it (``dpo_report``);
  ``measure`` times calls and peak memory.

Each writes a JSON object with ``--json PATH`` (``-`` for the last line of standard output).
"""
