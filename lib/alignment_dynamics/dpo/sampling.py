"""Mini-batch sampling shared by every DPO trainer of the book.

The official last-layer scripts draw each step's batch with ``next(iter(DataLoader(train,
batch_size=128, shuffle=True)))``: a fresh uniformly random permutation of the training set every
step, of which the first 128 examples are taken [official code]. So each step's batch is a uniformly
random subset of 128 distinct examples, independent of the other steps. :func:`sample_batches`
draws batches with exactly this distribution (not the same random numbers: those depend on
PyTorch's DataLoader internals) from explicit ``torch.Generator`` objects, and *both* trainers
(:func:`alignment_dynamics.dpo.train_reference` and :func:`alignment_dynamics.dpo.train_two_row`)
draw through it, so that a reference run and an exact run with the same seed see the same batches.
"""

from __future__ import annotations

from typing import Sequence

import torch

SeedLike = "int | torch.Generator"


def as_generators(generator, runs: int) -> list[torch.Generator]:
    """Normalise ``generator`` to one ``torch.Generator`` per run.

    * an ``int`` seed or one ``torch.Generator``: a single stream shared by the runs, drawn in run
      order (run r's batches then depend on the runs before it);
    * a sequence of ``runs`` seeds or generators: one independent stream per run (a run's batches do
      not depend on what it is batched with). Pass ``[1234] * R`` to give every run the seed 1234,
      as the official scripts do for each behaviour.
    """
    if runs < 1:
        raise ValueError(f"need at least one run, got runs={runs}")
    if isinstance(generator, torch.Generator):
        return [generator] * runs
    if isinstance(generator, int) and not isinstance(generator, bool):
        g = torch.Generator().manual_seed(generator)
        return [g] * runs
    if isinstance(generator, (list, tuple)):
        if len(generator) != runs:
            raise ValueError(f"generator: got {len(generator)} seeds/generators for {runs} runs; "
                             "pass one per run, or a single int / torch.Generator")
        return [as_generators(g, 1)[0] for g in generator]
    raise TypeError(f"generator must be an int seed, a torch.Generator or a sequence of them, "
                    f"got {type(generator).__name__}")


def sample_batches(sizes: int | Sequence[int], batch_size: int | None, steps: int, generator) -> torch.Tensor:
    """Each step's mini-batch: indices into each run's training set, shape ``[runs, steps, batch]``.

    ``sizes`` is the number of training examples of each run (an int for one run). Every step draws
    a uniformly random subset of ``batch_size`` distinct examples, independently of the other steps
    (the official protocol). The draw is a partial Fisher-Yates shuffle driven by
    ``torch.rand(steps, batch_size, dtype=float64)`` from the run's generator, vectorised over runs
    and steps. ``batch_size=None`` means full-batch training: every step uses all examples
    ``0..n-1`` in order (no randomness); runs of different sizes are then padded with ``-1``.
    """
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    if not sizes or any((not isinstance(n, int)) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive ints (training-set sizes), got {sizes!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    runs, n_max = len(sizes), max(sizes)
    if batch_size is None:
        out = torch.full((runs, steps, n_max), -1, dtype=torch.long)
        for r, n in enumerate(sizes):
            out[r, :, :n] = torch.arange(n)
        return out
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None (full batch), got {batch_size!r}")
    too_small = [n for n in sizes if n < batch_size]
    if too_small:
        raise ValueError(f"batch_size {batch_size} is larger than a training set of {min(too_small)} examples; "
                         "use a smaller batch or batch_size=None (full batch)")
    gens = as_generators(generator, runs)
    u = torch.stack([torch.rand(steps, batch_size, dtype=torch.float64, generator=g) for g in gens])
    rows = runs * steps
    u = u.view(rows, batch_size).t()  # [batch, rows]: column jj of every row at once
    n_row = torch.tensor(sizes, dtype=torch.float64).repeat_interleave(steps)
    j = torch.arange(batch_size, dtype=torch.float64).view(batch_size, 1)
    # partner of position j in a Fisher-Yates shuffle: uniform on {j, ..., n-1}
    k = torch.minimum(j + torch.floor(u * (n_row - j)), n_row - 1)
    base = torch.arange(rows, dtype=torch.float64) * n_max
    k = (k + base).to(torch.long)
    flat = torch.arange(n_max, dtype=torch.int32).expand(rows, n_max).reshape(-1)  # one permutation per row
    jpos = torch.arange(rows, dtype=torch.long) * n_max
    for jj in range(batch_size):  # swap position jj with its partner, in every row at once
        kk = k[jj]
        a = flat.index_select(0, jpos)
        flat.index_copy_(0, jpos, flat.index_select(0, kk))
        flat.index_copy_(0, kk, a)
        jpos += 1
    return flat.view(rows, n_max)[:, :batch_size].to(torch.long).view(runs, steps, batch_size)
