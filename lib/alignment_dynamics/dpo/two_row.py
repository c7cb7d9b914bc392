"""The exact batched last-layer DPO trainer for single-token answers on shared contexts.

When every pair is scored from one context h with single-token answers drawn from the same two tokens
a and b (the persona data's " Yes" and " No"), the log-sum-exp cancels from every DPO margin and only
rows a and b of the head receive gradient, with equal and opposite values (``paper.md`` §3,
``dpo-kernels.md`` §1; [derived]). So W_t − W_start = u v_tᵀ with u = e_a − e_b, and with
s_i = +1 when the chosen answer is a (−1 when it is b) the margin of pair i is

    Δ_i = 2 s_i (v_t · h_i),

and DPO on the head is logistic regression on the frozen features. This module trains v directly,
for many runs at once (behaviours, seeds, learning rates, β's in one call), in O(B·d) per step instead
of O(B·V·d), and computes every TRL metric exactly from the reference model's cached log-sum-exp of the
other tokens. It reproduces :func:`alignment_dynamics.dpo.train_reference` step for step (a test
checks 100 steps to 1e-10 in float64).

Optimisers: plain SGD (the official protocol), SGD with momentum, and Adam all keep W − W_start = u vᵀ,
because their per-coordinate state on row b is the negation (first moments) or a copy (second moments)
of row a's and is exactly zero on every other row. Weight decay touches every row and breaks the
structure: it is refused here (use :func:`alignment_dynamics.dpo.train_reference`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import torch

from .reference import (OPTIMIZERS, Reference, Trajectory, check_beta, check_hparams, check_matrix,
                        loss_derivative, metrics_from_parts)
from .sampling import sample_batches


IMPLS = ("auto", "numba", "torch")
_LOSS_CODES = {"sigmoid": 0, "robust": 1, "hinge": 2, "ipo": 3}


def signs(chosen: torch.Tensor, rejected: torch.Tensor, token_a: int, token_b: int) -> torch.Tensor:
    """s_i = +1 where the chosen answer is ``token_a`` and −1 where it is ``token_b`` (as float64).

    Every pair must use the two tokens, one each. For the persona data, ``token_a`` is " Yes".
    """
    chosen, rejected = torch.as_tensor(chosen).long(), torch.as_tensor(rejected).long()
    if token_a == token_b:
        raise ValueError(f"token_a and token_b must differ, got {token_a} twice")
    ok = ((chosen == token_a) & (rejected == token_b)) | ((chosen == token_b) & (rejected == token_a))
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten()[:5].tolist()
        raise ValueError(f"pairs {bad} do not use the tokens ({token_a}, {token_b}) one each; "
                         "the exact two-row trainer needs every pair to answer with these two tokens")
    return torch.where(chosen == token_a, 1.0, -1.0).to(torch.float64)


# ---------------------------------------------------------------------------------------------------
# The step loops (numba and torch); both compute exactly the same recursion
# ---------------------------------------------------------------------------------------------------

def _numba_kernel():
    """The compiled step loop (imported lazily: numba is optional)."""
    from .two_row_numba import step_loop

    return step_loop


def _run_torch(H, s, rows, counts, lr, beta, loss_type, eps, opt, momentum, b1, b2, aeps, V, dots):
    R, T, _ = rows.shape
    dt = V.dtype
    for r in range(R):
        v = V[r, 0].clone()
        m1 = torch.zeros_like(v)
        m2 = torch.zeros_like(v)
        cnt = int(counts[r])
        for t in range(T):
            idx = rows[r, t, :cnt]
            hb = H[idx].to(dt)
            sb = s[idx]
            acc = hb @ v
            dots[r, t, :cnt] = acc
            coef = loss_derivative(2.0 * sb * acc, float(beta[r]), loss_type, eps) * sb / cnt
            g = coef @ hb
            if opt == "sgd":
                if momentum > 0.0:
                    m1 = g.clone() if t == 0 else momentum * m1 + g
                    v = v - lr[r] * m1
                else:
                    v = v - lr[r] * g
            else:
                m1 = b1 * m1 + (1 - b1) * g
                m2 = b2 * m2 + (1 - b2) * g * g
                v = v - (lr[r] / (1 - b1 ** (t + 1))) * m1 / (m2.sqrt() / math.sqrt(1 - b2 ** (t + 1)) + aeps)
            V[r, t + 1] = v


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# Inputs: one training set per run, or one shared by all runs
# ---------------------------------------------------------------------------------------------------

def _is_seq(x) -> bool:
    return isinstance(x, (list, tuple))


def _per_run(name: str, value, runs: int) -> list:
    if _is_seq(value):
        if len(value) != runs:
            raise ValueError(f"{name}: got {len(value)} values for {runs} runs; give one per run or one for all")
        return list(value)
    return [value] * runs


def _n_runs(**kw) -> int:
    lengths = {k: len(v) for k, v in kw.items() if _is_seq(v)}
    if not lengths:
        return 1
    if len(set(lengths.values())) != 1:
        raise ValueError(f"per-run arguments disagree on the number of runs: {lengths}")
    return next(iter(lengths.values()))


def _check_signs(name: str, s, n: int) -> torch.Tensor:
    s = torch.as_tensor(s)
    if s.dim() != 1 or s.shape[0] != n:
        raise ValueError(f"{name} must be [n] with n = {n} (one sign per pair), got shape {tuple(s.shape)}")
    s = s.to(torch.float64)
    if not bool(((s == 1) | (s == -1)).all()):
        raise ValueError(f"{name} must hold +1 (chosen is token a) or -1 (chosen is token b) only")
    return s


def _check_reference(name: str, ref, n: int) -> Reference | None:
    if ref is None:
        return None
    if not isinstance(ref, Reference):
        raise TypeError(f"{name} must be an alignment_dynamics.dpo.Reference (from precompute_reference) or None, "
                        f"got {type(ref).__name__}")
    if len(ref) != n:
        raise ValueError(f"{name} describes {len(ref)} pairs but the data has {n}")
    return ref


def _pair_metrics(wdot, s, sdot, ref: Reference | None, *, beta, loss_type, label_smoothing, behavior_id=None,
                  n_behaviors=None) -> dict[str, torch.Tensor]:
    """Metrics of pairs (last dim) with v·h = ``wdot`` (relative to the start) and ``sdot`` = v_start·h."""
    delta = 2.0 * s * wdot
    if ref is None:
        return metrics_from_parts(delta, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                                  behavior_id=behavior_id, n_behaviors=n_behaviors)
    dt = wdot.dtype
    zc0, zr0, rest = ref.chosen_logits.to(dt), ref.rejected_logits.to(dt), ref.rest_lse.to(dt)
    zc_s, zr_s = zc0 + s * sdot, zr0 - s * sdot  # the starting (= reference) model's answer logits
    zc, zr = zc_s + s * wdot, zr_s - s * wdot
    lse = torch.logaddexp(rest, torch.logaddexp(zc, zr))
    lse_s = torch.logaddexp(rest, torch.logaddexp(zc_s, zr_s))
    lc, lr_ = zc - lse, zr - lse
    return metrics_from_parts(delta, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                              chosen_logratios=lc - (zc_s - lse_s), rejected_logratios=lr_ - (zr_s - lse_s),
                              chosen_logps=lc, rejected_logps=lr_, outputs_correct=(zc0 - zr0) + 2.0 * s * (sdot + wdot) > 0,
                              mean_logits_chosen=ref.mean_logit.to(dt), mean_logits_rejected=ref.mean_logit.to(dt),
                              behavior_id=behavior_id, n_behaviors=n_behaviors)


def _eval_spec(name: str, spec, runs: int, d: int) -> list[tuple]:
    specs = spec if (_is_seq(spec) and len(spec) > 0 and _is_seq(spec[0])) else [spec] * runs
    if len(specs) != runs:
        raise ValueError(f"eval set {name!r}: got {len(specs)} per-run sets for {runs} runs")
    out = []
    for sp in specs:
        if not _is_seq(sp) or len(sp) not in (2, 3, 4):
            raise ValueError(f"eval set {name!r} must be (H, s[, reference[, behavior_id]]) or a list of those, one per run")
        H = check_matrix(f"eval set {name!r} H", sp[0])
        if H.shape[1] != d:
            raise ValueError(f"eval set {name!r}: H has d={H.shape[1]}, expected {d}")
        s = _check_signs(f"eval set {name!r} s", sp[1], H.shape[0])
        ref = _check_reference(f"eval set {name!r} reference", sp[2] if len(sp) > 2 else None, H.shape[0])
        bid = torch.as_tensor(sp[3]).long() if len(sp) > 3 and sp[3] is not None else None
        out.append((H, s, ref, bid))
    return out


def _stack_dicts(dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([d_[k] for d_ in dicts]) for k in dicts[0]} if dicts else {}


# ---------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------

def train_two_row(H, s, *, beta, lr, steps: int, batch_size: int | None, generator,
                  reference=None, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                  optimizer: str = "sgd", momentum: float = 0.0, weight_decay: float = 0.0,
                  adam_betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8,
                  behavior_id=None, n_behaviors: int | None = None,
                  eval_sets: Mapping[str, Any] | None = None, flip=False, start_v=None,
                  dtype: torch.dtype = torch.float64, impl: str = "auto", keep_v: bool = True) -> Trajectory:
    """Train the Yes/No rows of the head exactly, for many runs in one call: the production path.

    **Data.** ``H`` (``[n, d]`` frozen features) and ``s`` (``[n]``, +1 where the chosen answer is
    token a, −1 where it is token b; see :func:`signs`). ``reference`` (optional) is the
    :class:`~alignment_dynamics.dpo.Reference` of the same pairs from
    :func:`~alignment_dynamics.dpo.precompute_reference` (with chosen/rejected as given, before any
    flip); with it, every TRL metric and the official ``outputs/accuracies`` are computed exactly;
    without it only ``loss`` and ``rewards/margins|accuracies``. ``behavior_id`` (``[n]`` ints) adds
    per-behaviour means of the training-batch metrics (joint training). ``eval_sets`` maps a name to
    ``(H, s[, reference[, behavior_id]])``; they are evaluated at W_t for t = 0..steps.

    **Runs.** Any of ``H``, ``s``, ``reference``, ``behavior_id``, ``beta``, ``lr``, ``generator``,
    ``flip``, ``start_v`` (and each eval set) may instead be a list with one entry per run; the others
    are shared. All runs share ``steps``, ``batch_size``, ``loss_type`` and the optimiser.
    ``generator`` is a seed or ``torch.Generator`` (one stream for all runs, in order) or one per run
    (``[1234] * R`` gives every run the official seed); batches come from
    :func:`~alignment_dynamics.dpo.sample_batches`, exactly as in
    :func:`~alignment_dynamics.dpo.train_reference`.

    **Protocol.** Plain SGD by default (``momentum``, or ``optimizer="adam"``, keep the two-row structure;
    ``weight_decay`` > 0 breaks it and is refused). ``flip=True`` swaps chosen and rejected
    (misalignment). ``start_v`` (``[d]``) starts from W_start = W_0 + u start_vᵀ, which is also the
    reference model, as in the official protocol; ``reference`` still describes W_0. ``dtype`` is the
    state's dtype (float64 by default; features stay in their own dtype and are promoted).
    ``impl``: ``"numba"`` (fast), ``"torch"`` (plain loops) or ``"auto"``.

    Returns a :class:`~alignment_dynamics.dpo.Trajectory` (run index first): ``train`` metrics
    ``[R, steps]``, ``eval[set]`` and ``head_change`` (‖W_t − W_start‖_F = √2‖v_t‖) ``[R, steps + 1]``,
    ``v`` (``[R, steps + 1, d]``, W_t − W_start = u v_tᵀ) when ``keep_v``.
    """
    if weight_decay:
        raise ValueError("weight_decay > 0 moves every row of the head, so the two-row trainer cannot represent it; "
                         "use alignment_dynamics.dpo.train_reference for weight decay")
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; valid: {list(IMPLS)}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    runs = _n_runs(H=H, s=s, reference=reference, behavior_id=behavior_id, beta=beta, lr=lr, generator=generator,
                   flip=flip, start_v=start_v if _is_seq(start_v) else None)
    betas = [check_beta(b) for b in _per_run("beta", beta, runs)]
    lrs = _per_run("lr", lr, runs)
    for b_, l_ in zip(betas, lrs):
        check_hparams(beta=b_, lr=l_, steps=steps, loss_type=loss_type, label_smoothing=label_smoothing,
                      optimizer=optimizer, momentum=momentum, weight_decay=0.0, adam_betas=adam_betas,
                      adam_eps=adam_eps)
    Hs = [check_matrix("H", h) for h in _per_run("H", H, runs)]
    d = Hs[0].shape[1]
    if any(h.shape[1] != d for h in Hs):
        raise ValueError(f"every run's H must have the same width d; got {sorted({h.shape[1] for h in Hs})}")
    flips = [bool(f) for f in _per_run("flip", flip, runs)]
    ss = [(-1.0 if f else 1.0) * _check_signs("s", x, h.shape[0]) for x, h, f in zip(_per_run("s", s, runs), Hs, flips)]
    refs = [_check_reference("reference", r, h.shape[0]) for r, h in zip(_per_run("reference", reference, runs), Hs)]
    refs = [r.swapped() if (r is not None and f) else r for r, f in zip(refs, flips)]
    bids = [None if b is None else torch.as_tensor(b).long() for b in _per_run("behavior_id", behavior_id, runs)]
    if any(b is not None and b.shape != (h.shape[0],) for b, h in zip(bids, Hs)):
        raise ValueError("behavior_id must be [n] for each run (one id per training pair)")
    if (bids[0] is None) != (bids[-1] is None) or len({b is None for b in bids}) > 1:
        raise ValueError("behavior_id must be given for every run or for none")
    nb = n_behaviors if n_behaviors is not None else (max(int(b.max()) for b in bids) + 1 if bids[0] is not None else None)
    sv = _start_vectors(start_v, runs, d, dtype)
    sizes = [h.shape[0] for h in Hs]
    batches = sample_batches(sizes, batch_size, steps, generator)  # [R, T, B], -1 pads full batches
    T, B = steps, batches.shape[2]
    counts = (batches[:, 0] >= 0).sum(1)
    padded = bool((counts != B).any())

    Hflat, offsets = _flat_features(Hs, torch.float32 if dtype == torch.float32 else None)
    valid = batches >= 0
    rows = torch.where(valid, batches + torch.tensor(offsets).view(runs, 1, 1), 0)
    # per-run quantities gathered per step ([R, T, B]) through one flat index
    gather = _Gather(batches, [h.shape[0] for h in Hs])
    s_rows = gather(ss, dtype)
    Vt = torch.zeros(runs, T + 1, d, dtype=dtype)
    dots = torch.zeros(runs, T, B, dtype=dtype)
    # runs that share feature rows must share signs too (else each run gets its own copy of the rows)
    by_block: dict[tuple[int, int], torch.Tensor] = {}
    clash = any(not torch.equal(by_block.setdefault((o, x.shape[0]), x), x) for o, x in zip(offsets, ss))
    spans = sorted(by_block)
    clash = clash or any(a[0] + a[1] > b[0] for a, b in zip(spans, spans[1:]))  # partly overlapping blocks
    if clash:
        Hflat, offsets = _flat_features(Hs, torch.float32 if dtype == torch.float32 else None, share=False)
        rows = torch.where(valid, batches + torch.tensor(offsets).view(runs, 1, 1), 0)
    sflat = torch.zeros(Hflat.shape[0], dtype=dtype)
    for o, x in zip(offsets, ss):
        sflat[o:o + x.shape[0]] = x
    lr_t = torch.tensor(lrs, dtype=dtype)
    beta_t = torch.tensor(betas, dtype=dtype)
    use_numba = impl == "numba" or (impl == "auto" and _numba_available())
    if use_numba:
        kernel = _numba_kernel()
        kernel(Hflat.numpy(), sflat.numpy(), rows.numpy(), counts.numpy(), lr_t.numpy(), beta_t.numpy(),
               _LOSS_CODES[loss_type], float(label_smoothing), OPTIMIZERS.index(optimizer), float(momentum),
               float(adam_betas[0]), float(adam_betas[1]), float(adam_eps), Vt.numpy(), dots.numpy())
    else:
        _run_torch(Hflat, sflat, rows, counts, lr_t, beta_t, loss_type, float(label_smoothing), optimizer,
                   float(momentum), float(adam_betas[0]), float(adam_betas[1]), float(adam_eps), Vt, dots)

    kw = dict(loss_type=loss_type, label_smoothing=float(label_smoothing))
    beta_b = beta_t.view(runs, 1, 1)
    sdots = [(h.to(dtype) @ sv[r]) if sv is not None else torch.zeros(h.shape[0], dtype=dtype) for r, h in enumerate(Hs)]
    has_ref = refs[0] is not None
    if any((r is None) != (not has_ref) for r in refs):
        raise ValueError("reference must be given for every run or for none")
    if padded:  # full batches of unequal sizes: one run at a time over its valid entries
        train, train_by = [], []
        for r in range(runs):
            idx = batches[r, :, :int(counts[r])]
            args = (dots[r, :, :int(counts[r])], ss[r].to(dtype)[idx], sdots[r][idx],
                    refs[r][idx] if has_ref else None)
            train.append(_pair_metrics(*args, beta=betas[r], **kw))
            if bids[0] is not None:
                train_by.append(_pair_metrics(*args, beta=betas[r], behavior_id=bids[r][idx], n_behaviors=nb, **kw))
        train, train_by = _stack_dicts(train), _stack_dicts(train_by)
    else:
        ref_rows = _RefRows(*(gather([getattr(r, f) for r in refs], dtype) for f in _RefRows._fields)) if has_ref else None
        sd_rows = gather(sdots, dtype) if sv is not None else torch.zeros((), dtype=dtype)
        args = (dots, s_rows, sd_rows, ref_rows)
        train = _pair_metrics(*args, beta=beta_b, **kw)
        train_by = (_pair_metrics(*args, beta=beta_b, behavior_id=gather(bids, torch.long), n_behaviors=nb, **kw)
                    if bids[0] is not None else {})
    ev, ev_by = {}, {}
    for name, spec in (eval_sets or {}).items():
        per_run = _eval_spec(name, spec, runs, d)
        if len({(sp[2] is None, sp[3] is None) for sp in per_run}) != 1:
            raise ValueError(f"eval set {name!r}: give the reference and behaviour ids for every run's set or for none")
        if len({sp[0].shape[0] for sp in per_run}) != 1:  # sets of unequal sizes: one run at a time
            ev[name], by = _eval_ragged(per_run, flips, Vt, sv, betas, n_behaviors, dtype, kw)
            if by:
                ev_by[name] = by
            continue
        He = _stack_shared([sp[0] for sp in per_run], dtype)  # [R, m, d]
        se = torch.stack([(-sp[1] if f else sp[1]).to(dtype) for sp, f in zip(per_run, flips)]).unsqueeze(1)
        refe = None
        if per_run[0][2] is not None:
            refe = _stack_reference([sp[2].swapped() if f else sp[2] for sp, f in zip(per_run, flips)], dtype)
        wdot = torch.bmm(Vt, He.transpose(1, 2))  # [R, T+1, m]
        sd = (torch.bmm(He, torch.stack(sv).unsqueeze(2)).transpose(1, 2) if sv is not None
              else torch.zeros(runs, 1, He.shape[1], dtype=dtype))
        ev[name] = _pair_metrics(wdot, se, sd, refe, beta=beta_b, **kw)
        if per_run[0][3] is not None:
            bide = torch.stack([sp[3] for sp in per_run]).unsqueeze(1).expand(runs, T + 1, -1)
            nbe = n_behaviors if n_behaviors is not None else int(bide.max()) + 1
            ev_by[name] = _pair_metrics(wdot, se, sd, refe, beta=beta_b, behavior_id=bide, n_behaviors=nbe, **kw)
    head_change = math.sqrt(2.0) * torch.linalg.vector_norm(Vt, dim=-1)
    return Trajectory(
        train=train, eval=ev, head_change=head_change, batches=batches,
        config=dict(trainer="two_row", impl="numba" if use_numba else "torch", beta=betas, lr=lrs, steps=steps,
                    batch_size=batch_size, loss_type=loss_type, label_smoothing=float(label_smoothing),
                    optimizer=optimizer, momentum=momentum, flip=flips, dtype=str(dtype)),
        train_by_behavior=train_by, eval_by_behavior=ev_by, v=Vt if keep_v else None)


def _eval_ragged(per_run, flips, Vt, sv, betas, n_behaviors, dtype, kw):
    """Metrics of per-run evaluation sets of unequal sizes, run by run, stacked to ``[R, T+1]``."""
    out, out_by = [], []
    for r, ((H, s, ref, bid), flip) in enumerate(zip(per_run, flips)):
        He = H.to(dtype)
        se = (-s if flip else s).to(dtype).unsqueeze(0)  # [1, m]
        refe = None
        if ref is not None:
            ref = ref.swapped() if flip else ref
            refe = _RefRows(*(getattr(ref, f).to(dtype).unsqueeze(0) for f in _RefRows._fields))
        wdot = Vt[r] @ He.T  # [T+1, m]
        sd = (He @ sv[r]).unsqueeze(0) if sv is not None else torch.zeros(1, He.shape[0], dtype=dtype)
        out.append(_pair_metrics(wdot, se, sd, refe, beta=betas[r], **kw))
        if bid is not None:
            bide = bid.unsqueeze(0).expand(wdot.shape[0], -1)
            nbe = n_behaviors if n_behaviors is not None else int(max(int(sp[3].max()) for sp in per_run)) + 1
            out_by.append(_pair_metrics(wdot, se, sd, refe, beta=betas[r], behavior_id=bide, n_behaviors=nbe, **kw))
    return _stack_dicts(out), (_stack_dicts(out_by) if out_by else {})


class _RefRows(NamedTuple):
    """The reference quantities the metrics need, per pair (any shape)."""

    chosen_logits: torch.Tensor
    rejected_logits: torch.Tensor
    rest_lse: torch.Tensor
    mean_logit: torch.Tensor


class _Gather:
    """``per_run[r][batches[r]]`` for every run as one ``[R, T, B]`` tensor, through one flat index.

    Padding entries (-1, full batches of unequal sizes) read each run's first row; callers mask them.
    """

    def __init__(self, batches: torch.Tensor, sizes: list[int]):
        off = torch.tensor([0] + sizes[:-1]).cumsum(0).view(-1, 1, 1)
        self.shape = batches.shape
        self.index = torch.where(batches >= 0, batches, 0).add(off).reshape(-1)

    def __call__(self, per_run: list[torch.Tensor], dtype) -> torch.Tensor:
        flat = torch.cat([x.to(dtype) for x in per_run])
        return flat.index_select(0, self.index).view(self.shape)


def _stack_reference(refs: list[Reference], dtype) -> _RefRows:
    """Per-run references of equal size as ``[R, 1, m]`` fields (broadcast over steps)."""
    return _RefRows(*(torch.stack([getattr(r, f).to(dtype) for r in refs]).unsqueeze(1) for f in _RefRows._fields))


def _stack_shared(tensors: list[torch.Tensor], dtype) -> torch.Tensor:
    if all(t is tensors[0] for t in tensors):
        return tensors[0].to(dtype).unsqueeze(0).expand(len(tensors), -1, -1)
    return torch.stack([t.to(dtype) for t in tensors])


def _flat_features(Hs: list[torch.Tensor], cast, share: bool = True) -> tuple[torch.Tensor, list[int]]:
    """All runs' training features as one ``[N, d]`` matrix and each run's first row in it.

    Runs given the same tensor share its rows. Runs whose features are row blocks of one contiguous
    tensor (e.g. slices of a matrix of all embeddings) are used in place, without a copy.
    """
    d = Hs[0].shape[1]
    want = cast or (Hs[0].dtype if Hs[0].dtype in (torch.float32, torch.float64) else torch.float64)
    same_store = share and all(
        h.dtype == want and h.is_contiguous() and h.untyped_storage().data_ptr() == Hs[0].untyped_storage().data_ptr()
        and h.storage_offset() % d == 0 for h in Hs)
    if same_store:
        starts = [h.storage_offset() // d for h in Hs]
        lo = min(starts)
        hi = max(s + h.shape[0] for s, h in zip(starts, Hs))
        flat = torch.as_strided(Hs[0].detach(), (hi - lo, d), (d, 1), storage_offset=lo * d)
        return flat, [s - lo for s in starts]
    uniq: dict[int, int] = {}
    blocks, offsets, off = [], [], 0
    for h in Hs:
        key = id(h) if share else len(blocks)
        if key not in uniq:
            uniq[key] = off
            blocks.append(h.detach().to(want))
            off += h.shape[0]
        offsets.append(uniq[key])
    return torch.cat(blocks).contiguous(), offsets


def _start_vectors(start_v, runs: int, d: int, dtype) -> list[torch.Tensor] | None:
    if start_v is None:
        return None
    vs = start_v if _is_seq(start_v) else [start_v] * runs
    if isinstance(start_v, torch.Tensor) and start_v.dim() == 2:
        vs = list(start_v)
        if len(vs) != runs:
            raise ValueError(f"start_v: got {len(vs)} rows for {runs} runs")
    out = []
    for v in vs:
        v = torch.as_tensor(v)
        if v.shape != (d,):
            raise ValueError(f"start_v must be [d] = [{d}] (W_start = W_0 + u start_vᵀ), got shape {tuple(v.shape)}")
        out.append(v.to(dtype))
    return out


