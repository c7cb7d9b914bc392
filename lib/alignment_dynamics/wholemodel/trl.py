"""The same training with TRL's ``DPOTrainer``, for comparison with :func:`~.train.train_dpo`.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Sequence

import numpy as np

from .batches import tokenize_pairs
from .checks import FinetuneError
from .policy import make_policy, METHODS
from .train import train_dpo, TrainSettings


def trl_comparison(model, tokenizer, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], *,
                   steps: int = 2, lr: float = 1e-5, beta: float = 0.01, seed: int = 1234,
                   method: str = "lora") -> dict[str, Any]:
    """Train the same whole-model DPO with TRL's ``DPOTrainer`` and with :func:`train_dpo`; compare.

    One batch holds every pair (``len(prompts)``), for ``steps`` steps: AdamW, constant ``lr``, β,
    gradient clipping at 1, dropout off (TRL's default), LoRA r 8, α 32 on ``q_proj``/``v_proj`` (or
    ``method="full"``). TRL seeds torch's global generator with ``seed`` before it adds the adapter, and
    :func:`make_policy` does the same inside a forked generator, so both start from the same LoRA
    weights and the two loss trajectories should agree to float32 rounding. Returns, per
    implementation, the losses and mean chosen log-probs at each step and the wall time per step
    (TRL's includes its reference forward pass at every step; ours its one-off reference pass).
    """
    import io
    import logging
    import shutil
    import time
    import warnings

    import torch

    from .. import cache as adcache

    if method not in METHODS:
        raise FinetuneError(f"method must be one of {list(METHODS)}, got {method!r}")
    n = len(prompts)
    if n < 2 or not (len(chosen) == len(rejected) == n):
        raise FinetuneError(f"need at least 2 pairs with as many chosen and rejected answers, got {n}, "
                            f"{len(chosen)}, {len(rejected)}")
    from datasets import Dataset, disable_progress_bars
    from peft import LoraConfig
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig, DPOTrainer

    disable_progress_bars()
    hf_logging.set_verbosity_error()
    logging.getLogger("trl").setLevel(logging.ERROR)
    out_dir = adcache.scratch_dir("ad-trl-")
    trl_model = copy.deepcopy(model)
    if hasattr(trl_model.config, "quantization_config"):
        del trl_model.config.quantization_config
    trl_model.set_attn_implementation("eager")
    args = DPOConfig(output_dir=str(out_dir), per_device_train_batch_size=n, max_steps=steps, logging_steps=1,
                     learning_rate=lr, lr_scheduler_type="constant", beta=beta, report_to=[], save_strategy="no",
                     use_cpu=next(model.parameters()).device.type == "cpu", seed=seed, dataloader_num_workers=0,
                     disable_tqdm=True, max_grad_norm=1.0,
                     bf16=False)  # TRL's default is bf16 autocast; ours is float32 throughout
    peft_config = (LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], bias="none",
                              task_type="CAUSAL_LM") if method == "lora" else None)
    ds = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in zip(prompts, chosen, rejected)])
    try:
        with warnings.catch_warnings(), torch.random.fork_rng():
            warnings.simplefilter("ignore")
            ref = None
            if method == "full":
                ref = copy.deepcopy(trl_model).eval()
                for p in ref.parameters():
                    p.requires_grad_(False)
            trainer = DPOTrainer(model=trl_model, ref_model=ref, args=args, train_dataset=ds,
                                 processing_class=tokenizer, peft_config=peft_config)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints its log lines
                trainer.train()
            trl_s = (time.perf_counter() - t0) / steps
        logs = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    pairs = tokenize_pairs(tokenizer, prompts, chosen, rejected)
    t0 = time.perf_counter()
    run = train_dpo(make_policy(model, method=method, seed=seed), pairs,
                    TrainSettings(beta=beta, lr=lr, batch_size=n, steps=steps, micro_batch=max(2, n)),
                    seed=seed, progress=False)
    ours_s = (time.perf_counter() - t0) / steps
    return {
        "trl_loss": np.array([h["loss"] for h in logs]), "ours_loss": run.train["loss"],
        "trl_logps_chosen": np.array([h["logps/chosen"] for h in logs]), "ours_logps_chosen": run.train["logps/chosen"],
        "trl_s_per_step": trl_s, "ours_s_per_step": ours_s, "pairs": n, "steps": steps, "method": method,
    }
