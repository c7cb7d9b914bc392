"""The policy of whole-model DPO: a trainable copy of a causal LM (all its weights, LoRA adapters, or
only its top blocks), the views of its decoder that run a range of blocks, and the merged model.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

from .checks import FinetuneError

METHODS = ("full", "lora")
LORA_DEFAULTS = {"r": 8, "alpha": 32, "dropout": 0.05, "targets": ("q_proj", "v_proj")}


# ---------------------------------------------------------------------------------------------------
# Views of a decoder: the frozen bottom and the trainable top
# ---------------------------------------------------------------------------------------------------

def decoder_and_head(model):
    """The decoder stack (``.layers``, ``.norm``) and the output head of a causal LM (peft-wrapped or not)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    if decoder is None or not hasattr(decoder, "layers"):
        raise FinetuneError(f"{type(base).__name__} has no decoder with `.layers`; whole-model DPO needs a "
                            "decoder-only causal LM (Llama, Gemma-3, Mistral, ...)")
    head = base.get_output_embeddings()
    if head is None:
        raise FinetuneError(f"{type(base).__name__} has no output embeddings (lm_head)")
    return base, decoder, head


def block_view(decoder, start: int, stop: int, *, final_norm: bool):
    """A module sharing ``decoder``'s parameters that runs only its blocks ``start:stop``.

    Call it with ``inputs_embeds`` (the hidden state entering block ``start``) or ``input_ids``
    (``start`` must then be 0). Without ``final_norm`` it returns the hidden state leaving block
    ``stop - 1``, before the final norm.
    """
    import torch

    view = copy.copy(decoder)
    view._modules = dict(decoder._modules)
    view._parameters = dict(decoder._parameters)
    view._buffers = dict(decoder._buffers)
    view.layers = torch.nn.ModuleList(list(decoder.layers)[start:stop])
    if not final_norm:
        view.norm = torch.nn.Identity()
    cfg = copy.copy(decoder.config)
    cfg.num_hidden_layers = stop - start
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = list(cfg.layer_types)[start:stop]
    view.config = cfg
    return view


def _n_layers(model) -> int:
    return len(decoder_and_head(model)[1].layers)


def pad_token_id(base) -> int:
    """The token that pads packed rows: the model's pad token, else its EOS or BOS token, else 0."""
    cfg = base.config
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = getattr(cfg, name, None)
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    return 0


def module_digest(module) -> str:
    """SHA-256 over a module's parameter and buffer names, dtypes, shapes and bytes.
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        t = state[name]
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------------

@dataclass
class Policy:
    """A trainable copy of a causal LM for DPO.

    ``module`` is the trained model (a peft model for ``method="lora"``); ``split`` is the index of the
    first trainable block (0: the whole model trains); ``cached`` says whether the frozen bottom's
    output is read from the activation cache instead of being recomputed.
    """

    module: Any
    method: str
    split: int
    cached: bool
    seed: int
    lora: dict = field(default_factory=dict)
    _bottom: str | None = field(default=None, repr=False)

    def bottom_digest(self) -> str:
        """SHA-256 of the frozen bottom's weights (embedding and blocks ``0:split``), computed once."""
        if self._bottom is None:
            _, decoder, _ = decoder_and_head(self.module)
            self._bottom = module_digest(block_view(decoder, 0, self.split, final_norm=False))
        return self._bottom

    @property
    def n_layers(self) -> int:
        return _n_layers(self.module)

    def trainable_parameters(self) -> list:
        return [p for p in self.module.parameters() if p.requires_grad]

    def n_trainable(self) -> int:
        return int(sum(p.numel() for p in self.trainable_parameters()))


def make_policy(model, *, method: str = "full", top_blocks: int | None = None, cached: bool = True,
                seed: int = 1234, lora_r: int = 8, lora_alpha: int = 32, lora_dropout: float = 0.05,
                lora_targets: Sequence[str] = ("q_proj", "v_proj"), disable_dropout: bool = True,
                attn_implementation: str = "eager", copy_model: bool = True) -> Policy:
    """Wrap a causal LM for whole-model DPO; the input model's weights are never modified.

    The policy is a copy (``copy_model=True``), except that with ``top_blocks`` the frozen bottom's
    tensors are shared with ``model`` (they are frozen in the policy, and marked so in ``model`` too).

    ``method="full"`` trains every weight (with ``top_blocks=k``: the last ``k`` blocks and the final
    norm); ``method="lora"`` trains LoRA adapters (official: r 8, α 32, dropout 0.05 on ``q_proj`` and
    ``v_proj``; with ``top_blocks=k`` only in the last ``k`` blocks). With ``top_blocks`` set the
    embedding (and a head tied to it) is frozen, and ``cached=True`` reads the frozen bottom's output
    from :func:`trunk_activations` instead of recomputing it.

    ``disable_dropout=True`` sets every dropout probability to 0, LoRA's included, as TRL's
    ``DPOTrainer`` does by default (``disable_dropout=True`` since TRL 0.7); the official scripts kept
    that default, so their LoRA dropout of 0.05 was in effect 0 [official code, our reading].

    ``attn_implementation="eager"`` (the default here): PyTorch's fused CPU attention gives a row
    results that depend, in the last bit, on the other rows of its batch; eager attention does not,
    which is what makes the reference log-probs, computed once, equal the policy's at step 0 bit for
    bit, and the cached top-block path equal the whole-model path bit for bit.
    """
    import torch

    if method not in METHODS:
        raise FinetuneError(f"method must be one of {list(METHODS)}, got {method!r}")
    L = _n_layers(model)
    if top_blocks is not None:
        if isinstance(top_blocks, bool) or not isinstance(top_blocks, int) or not 1 <= top_blocks <= L:
            raise FinetuneError(f"top_blocks must be None (whole model) or an int in 1..{L} for this "
                                f"{L}-block model, got {top_blocks!r}")
    split = 0 if top_blocks is None else L - top_blocks
    module = copy.deepcopy(model, _frozen_memo(model, split)) if copy_model else model
    if attn_implementation is not None:
        module.set_attn_implementation(attn_implementation)
    module.train()
    lora = {}
    if method == "lora":
        import peft

        if lora_r < 1 or lora_alpha <= 0 or not 0 <= lora_dropout < 1:
            raise FinetuneError(f"LoRA needs r >= 1, alpha > 0 and 0 <= dropout < 1, got r={lora_r}, "
                                f"alpha={lora_alpha}, dropout={lora_dropout}")
        names = {n.rsplit(".", 1)[-1] for n, _ in module.named_modules()}
        missing = [t for t in lora_targets if t not in names]
        if missing:
            raise FinetuneError(f"LoRA targets {missing} are not module names of this model")
        lora = {"r": lora_r, "alpha": lora_alpha, "dropout": lora_dropout, "targets": list(lora_targets)}
        cfg = peft.LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                              target_modules=list(lora_targets), bias="none", task_type="CAUSAL_LM",
                              layers_to_transform=None if split == 0 else list(range(split, L)))
        with seeded(seed, module):
            module = peft.get_peft_model(module, cfg)
    else:
        for p in module.parameters():
            p.requires_grad_(True)
        if split > 0:
            _, decoder, head = decoder_and_head(module)
            trainable = set()
            for blk in list(decoder.layers)[split:]:
                trainable |= {id(p) for p in blk.parameters()}
            trainable |= {id(p) for p in decoder.norm.parameters()}
            for p in module.parameters():
                if id(p) not in trainable:
                    p.requires_grad_(False)
    if disable_dropout:
        for mod in module.modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.0
        for cfg_obj in {id(c): c for c in _configs(module)}.values():
            for name in ("attention_dropout", "hidden_dropout", "dropout"):
                if isinstance(getattr(cfg_obj, name, None), float):
                    setattr(cfg_obj, name, 0.0)
    return Policy(module=module, method=method, split=split, cached=bool(cached and split > 0), seed=int(seed),
                  lora=lora)


def _configs(module):
    for mod in module.modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            yield cfg


def _frozen_memo(model, split: int) -> dict:
    """A ``copy.deepcopy`` memo that shares (does not copy) the tensors of a frozen bottom.

    With ``split`` > 0 the embedding (and a head tied to it) and blocks ``0:split`` never change, so
    every policy made from one model shares them: a policy then costs the memory of its top blocks only.
    """
    if split == 0:
        return {}
    _, decoder, _ = decoder_and_head(model)
    memo = {}
    for mod in [decoder.embed_tokens, *list(decoder.layers)[:split]]:
        for t in [*mod.parameters(), *mod.buffers()]:
            memo[id(t)] = t
    return memo


def merged_model(policy: Policy):
    """The policy's weights as a plain causal LM (LoRA adapters merged in), e.g. the "Aligned" model.

    A frozen bottom (``top_blocks``) is shared with the policy, not copied.
    """
    module = copy.deepcopy(policy.module, _frozen_memo(policy.module, policy.split))
    if policy.method == "lora":
        module = module.merge_and_unload()
    for p in module.parameters():
        p.requires_grad_(False)
    module.eval()
    return module


@contextlib.contextmanager
def seeded(seed: int, module):
    """Seed torch's generator of the module's device inside the block only (LoRA init and dropout)."""
    import torch

    device = next(module.parameters()).device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield
