"""DPO kernels for training the unembedding of a language model on frozen features.

* :mod:`.reference` -- the semantics, in plain PyTorch over the full vocabulary: log-probs, the DPO
  losses (TRL's ``sigmoid``, ``robust``, ``hinge``, ``ipo``), TRL's metrics and the float64 reference
  trainer :func:`train_reference`;
* :mod:`.two_row` -- the exact batched trainer for single-token answers on shared contexts
  (:func:`train_two_row`): only two rows of the head move, and DPO is logistic regression;
* :mod:`.fused` -- fused linear log-probs and DPO for the general case (distinct contexts, multi-token
  responses) without materialising the N x V logits, on the CPU (PyTorch) and on the GPU (cuBLAS GEMMs
  with Triton row kernels, :mod:`.gemm_path`; or fully fused Triton kernels, :mod:`.triton_kernels`);
* :mod:`.sampling` -- the one mini-batch sampler every trainer draws through.

See ``book/kernels.md`` for the derivations, the correctness evidence and the benchmarks.
"""

from .reference import (IGNORE_INDEX, LOSS_TYPES, METRIC_NAMES, Reference, Trajectory, dpo_loss, dpo_metrics,
                        group_mean, logprobs_naive, loss_derivative, loss_from_delta, precompute_reference,
                        train_reference)
from .sampling import as_generators, sample_batches
from .two_row import signs, train_two_row

__all__ = [
    "IGNORE_INDEX", "LOSS_TYPES", "METRIC_NAMES", "Reference", "Trajectory", "as_generators", "dpo_loss",
    "dpo_metrics", "group_mean", "logprobs_naive", "loss_derivative", "loss_from_delta", "precompute_reference",
    "sample_batches", "signs", "train_reference", "train_two_row",
]
