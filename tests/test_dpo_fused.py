"""Tests of the fused linear log-probs and DPO loss (the torch path; the Triton path is in test_dpo_triton.py)."""

import math

import pytest
import torch

import alignment_dynamics.dpo as dpo
from alignment_dynamics.dpo.fused import fused_dpo_loss, selective_logprobs, sequence_logps

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread


def _g(seed):
    return torch.Generator().manual_seed(seed)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# --- 1. gradcheck ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("V,d,N,K", [(37, 13, 5, 1), (37, 13, 5, 2), (123, 31, 5, 2)])
def test_gradcheck_selective_logprobs(V, d, N, K):
    H = torch.randn(N, d, generator=_g(V + K), dtype=torch.float64, requires_grad=True)
    W = (0.5 * torch.randn(V, d, generator=_g(K), dtype=torch.float64)).requires_grad_(True)
    t = torch.randint(0, V, (N, K), generator=_g(3))
    fn = lambda h, w: selective_logprobs(h, w, t, chunk_rows=2, vocab_tile=50, need_dh=True)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (H, W), eps=1e-6, atol=1e-8, fast_mode=V > 100)


@pytest.mark.parametrize("shared", [True, False])
def test_gradcheck_fused_dpo_loss(shared):
    V, d, P = 37, 13, 5
    W = (0.5 * torch.randn(V, d, generator=_g(1), dtype=torch.float64)).requires_grad_(True)
    H = torch.randn(P, d, generator=_g(2), dtype=torch.float64)
    Hr = None if shared else torch.randn(P, d, generator=_g(3), dtype=torch.float64)
    c, r = torch.randint(0, V, (P,), generator=_g(4)), torch.randint(0, V, (P,), generator=_g(5))
    rc, rr = -torch.rand(P, generator=_g(6), dtype=torch.float64) * 5, -torch.rand(P, generator=_g(7), dtype=torch.float64) * 5
    fn = lambda w: fused_dpo_loss(H, w, c, r, rc, rr, beta=0.7, H_rejected=Hr, chunk_rows=2).loss  # noqa: E731
    assert torch.autograd.gradcheck(fn, (W,), eps=1e-6, atol=1e-8)


# --- 2. closed-form oracles -------------------------------------------------------------------------------

def test_shared_context_gradient_is_two_rows():
    V, d, P, a, b = 60, 12, 40, 11, 29
    H = torch.randn(P, d, generator=_g(1), dtype=torch.float64)
    W0 = torch.randn(V, d, generator=_g(2), dtype=torch.float64)
    yes = torch.rand(P, generator=_g(3)) < 0.5
    c, r = torch.where(yes, a, b), torch.where(yes, b, a)
    ref = dpo.precompute_reference(H, W0, c, r)
    W = (W0 + 0.1 * torch.randn(V, d, generator=_g(4), dtype=torch.float64)).requires_grad_(True)
    out = fused_dpo_loss(H, W, c, r, ref.chosen_logps, ref.rejected_logps, beta=0.3, chunk_rows=7)
    out.loss.backward()
    others = [j for j in range(V) if j not in (a, b)]
    assert W.grad[others].abs().max().item() == 0.0  # exactly: the dense term is skipped (c = 0)
    torch.testing.assert_close(W.grad[a], -W.grad[b], rtol=0, atol=1e-15)
    # Delta = (dW[y_w] - dW[y_l]) . h with dW = W - W0
    s = torch.where(yes, 1.0, -1.0).double()
    dW = W.detach() - W0
    delta = s * (H @ (dW[a] - dW[b]))
    torch.testing.assert_close((out.chosen_rewards - out.rejected_rewards) / 0.3, delta, rtol=0, atol=1e-12)
    # closed form: dL/dW = -(beta/P) sum_i sigma(-beta Delta_i)(e_w - e_l) h_i^T
    coef = -0.3 / P * torch.sigmoid(-0.3 * delta)
    want_a = ((coef * torch.where(yes, 1.0, -1.0).double())[:, None] * H).sum(0)
    torch.testing.assert_close(W.grad[a], want_a, rtol=0, atol=1e-14)


def test_distinct_contexts_gradient_closed_form():
    V, d, P, beta = 45, 10, 6, 0.4
    W = torch.randn(V, d, generator=_g(1), dtype=torch.float64, requires_grad=True)
    Hw, Hl = torch.randn(P, d, generator=_g(2), dtype=torch.float64), torch.randn(P, d, generator=_g(3), dtype=torch.float64)
    w, l = torch.randint(0, V, (P,), generator=_g(4)), torch.randint(0, V, (P,), generator=_g(5))
    rc, rr = -3 * torch.rand(P, generator=_g(6), dtype=torch.float64), -3 * torch.rand(P, generator=_g(7), dtype=torch.float64)
    out = fused_dpo_loss(Hw, W, w, l, rc, rr, beta=beta, H_rejected=Hl, chunk_rows=4, vocab_tile=8)
    out.loss.backward()
    with torch.no_grad():
        pw, pl = torch.softmax(Hw @ W.T, 1), torch.softmax(Hl @ W.T, 1)
        delta = (out.chosen_logps - rc) - (out.rejected_logps - rr)
        E = torch.eye(V, dtype=torch.float64)
        want = torch.zeros(V, d, dtype=torch.float64)
        for i in range(P):
            want += -beta * torch.sigmoid(-beta * delta[i]) * (torch.outer(E[w[i]] - pw[i], Hw[i]) - torch.outer(E[l[i]] - pl[i], Hl[i]))
        want /= P
    torch.testing.assert_close(W.grad, want, rtol=0, atol=1e-14)


def test_fused_sgd_matches_two_row_step_by_step():
    V, d, n, a, b = 50, 16, 200, 7, 3
    g = _g(11)
    yes = torch.rand(n, generator=g) < 0.5
    H = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5 * torch.where(yes, 1.0, -1.0).double()[:, None]
    W0 = 0.3 * torch.randn(V, d, generator=g, dtype=torch.float64)
    c, r = torch.where(yes, a, b), torch.where(yes, b, a)
    ref = dpo.precompute_reference(H, W0, c, r, logprobs=lambda h, w, t: selective_logprobs(h, w, t))
    lr, beta, steps, B = 5.0, 0.1, 30, 64
    exact = dpo.train_two_row(H, dpo.signs(c, r, a, b), reference=ref, beta=beta, lr=lr, steps=steps, batch_size=B, generator=4)
    W = W0.clone().requires_grad_(True)
    for t in range(steps):
        idx = exact.batches[0, t]
        out = fused_dpo_loss(H[idx], W, c[idx], r[idx], ref.chosen_logps[idx], ref.rejected_logps[idx], beta=beta)
        assert abs(out.loss.item() - exact.train["loss"][0, t].item()) <= 1e-12
        W.grad = None
        out.loss.backward()
        with torch.no_grad():
            W -= lr * W.grad
    torch.testing.assert_close(W.detach()[a] - W0[a], exact.v[0, -1], rtol=0, atol=1e-12)


# --- 3. golden values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,golden", [(torch.float64, 0.6931471805599453), (torch.float32, 0.6931471824645996)])
def test_fused_loss_is_ln2_at_initialisation(dtype, golden):
    V, d, P = 300, 24, 16
    H = torch.randn(P, d, generator=_g(1)).to(dtype)
    W0 = torch.randn(V, d, generator=_g(2)).to(dtype)
    c, r = torch.randint(0, V, (P,), generator=_g(3)), torch.randint(0, V, (P,), generator=_g(4))
    with torch.no_grad():
        ref = fused_dpo_loss(H, W0, c, r, torch.zeros(P), torch.zeros(P), beta=0.1)
    out = fused_dpo_loss(H, W0, c, r, ref.chosen_logps, ref.rejected_logps, beta=0.1)
    assert out.loss.item() == golden


def test_first_step_norm_through_the_fused_op():
    V, d, a, b, eta, beta = 40, 8, 5, 9, 0.3, 0.01
    H = torch.randn(100, d, generator=_g(5), dtype=torch.float64)
    yes = torch.arange(100) < 50
    c, r = torch.where(yes, a, b), torch.where(yes, b, a)
    W0 = torch.randn(V, d, generator=_g(6), dtype=torch.float64)
    ref = dpo.precompute_reference(H, W0, c, r)
    W = W0.clone().requires_grad_(True)
    fused_dpo_loss(H, W, c, r, ref.chosen_logps, ref.rejected_logps, beta=beta).loss.backward()
    step = torch.linalg.norm(eta * W.grad).item()
    want = math.sqrt(2) * eta * beta / 4 * torch.linalg.norm(H[:50].mean(0) - H[50:].mean(0)).item()
    assert abs(step - want) <= 1e-15


# --- 4. dtype tolerances against float64 ---------------------------------------------------------------------

def _dpo_case(dtype, V=517, d=48, P=24, L=5, seed=0):
    g = _g(seed)
    W = (0.2 * torch.randn(V, d, generator=g)).to(dtype)
    Hw, Hl = torch.randn(P, L, d, generator=g).to(dtype), torch.randn(P, L, d, generator=g).to(dtype)
    tw, tl = torch.randint(0, V, (P, L), generator=g), torch.randint(0, V, (P, L), generator=g)
    mw, ml = torch.rand(P, L, generator=g) < 0.8, torch.rand(P, L, generator=g) < 0.8
    mw[:, 0] = ml[:, 0] = True
    rc, rr = -20 * torch.rand(P, generator=g), -20 * torch.rand(P, generator=g)
    return W, Hw, Hl, tw, tl, mw, ml, rc, rr


def _loss_and_grad(W, Hw, Hl, tw, tl, mw, ml, rc, rr, **kw):
    W = W.clone().requires_grad_(True)
    out = fused_dpo_loss(Hw, W, tw, tl, rc, rr, beta=0.1, H_rejected=Hl, chosen_mask=mw, rejected_mask=ml, **kw)
    out.loss.backward()
    return out.loss.detach(), W.grad


def test_float32_tolerances_against_float64():
    case = _dpo_case(torch.float32)
    loss32, g32 = _loss_and_grad(*case, chunk_rows=16, vocab_tile=100)
    loss64, g64 = _loss_and_grad(*[x.double() if x.is_floating_point() else x for x in case])
    assert abs(loss32.double().item() - loss64.item()) / abs(loss64.item()) <= 1e-6
    assert _rel(g32, g64) <= 1e-5
    torch.testing.assert_close(g32.double(), g64, atol=1e-5, rtol=5e-4)
    assert g32.dtype == torch.float32


def test_bf16_operands_with_fp32_accumulation():
    case = _dpo_case(torch.bfloat16, seed=1)
    loss16, g16 = _loss_and_grad(*case)
    up = [x.double() if x.is_floating_point() else x for x in case]  # float64 on the same bf16 values
    loss64, g64 = _loss_and_grad(*up)
    assert g16.dtype == torch.bfloat16
    assert abs(loss16.item() - loss64.item()) / abs(loss64.item()) <= 1e-2
    assert _rel(g16, g64) <= 1e-2
    mixed = list(case)
    mixed[0] = case[0].float()  # bf16 H with an fp32 W
    loss_m, g_m = _loss_and_grad(*mixed)
    assert abs(loss_m.item() - loss64.item()) / abs(loss64.item()) <= 1e-5 and _rel(g_m, g64) <= 1e-4


# --- 5-6. metric identities, trajectory invariance ----------------------------------------------------------

def test_chosen_logprob_rises_exactly_when_margin_is_positive():
    V, d, P, a, b = 80, 10, 200, 1, 2
    H = torch.randn(P, d, generator=_g(8), dtype=torch.float64)
    W0 = torch.randn(V, d, generator=_g(9), dtype=torch.float64)
    yes = torch.rand(P, generator=_g(10)) < 0.5
    c, r = torch.where(yes, a, b), torch.where(yes, b, a)
    ref = dpo.precompute_reference(H, W0, c, r)
    v = torch.randn(d, generator=_g(12), dtype=torch.float64)
    W = W0.clone()
    W[a] += v
    W[b] -= v
    out = fused_dpo_loss(H, W, c, r, ref.chosen_logps, ref.rejected_logps, beta=0.5, reduction="none")
    margin = out.chosen_rewards - out.rejected_rewards
    assert torch.equal(torch.sign(out.chosen_rewards), torch.sign(margin))
    logits_w = H @ W.T  # ratios among non-answer tokens are unchanged
    others = [j for j in range(V) if j not in (a, b)]
    torch.testing.assert_close(logits_w[:, others] - logits_w[:, others[:1]], (H @ W0.T)[:, others] - (H @ W0.T)[:, others[:1]])


def _sgd_trajectory(chunk_rows, steps=20, **kw):
    W, Hw, Hl, tw, tl, mw, ml, rc, rr = _dpo_case(torch.float32, V=300, d=32, P=12, L=4, seed=3)
    W0 = W.clone()
    losses, norms = [], []
    W = W.clone().requires_grad_(True)
    for _ in range(steps):
        out = fused_dpo_loss(Hw, W, tw, tl, rc, rr, beta=0.5, H_rejected=Hl, chosen_mask=mw, rejected_mask=ml,
                             chunk_rows=chunk_rows, **kw)
        W.grad = None
        out.loss.backward()
        with torch.no_grad():
            W -= 0.5 * W.grad
        losses.append(out.loss.item())
        norms.append(torch.linalg.norm(W.detach() - W0).item())
    return torch.tensor(losses, dtype=torch.float64), torch.tensor(norms, dtype=torch.float64)


def test_same_trajectory_for_chunk_sizes_1_7_and_N():
    base_l, base_n = _sgd_trajectory(12 * 4)
    assert base_l[-1] < base_l[0]
    for cr in (1, 7):
        l_, n_ = _sgd_trajectory(cr, vocab_tile=64)
        assert (l_ - base_l).abs().max().item() <= 1e-6 and (l_ - base_l).abs().mean().item() <= 1e-7
        assert (n_ - base_n).abs().max().item() <= 1e-6


def test_precomputed_reference_equals_on_the_fly():
    W, Hw, Hl, tw, tl, mw, ml, _, _ = _dpo_case(torch.float32, seed=4)
    W0 = W.clone()
    with torch.no_grad():
        rc = sequence_logps(Hw, W0, tw, mw)
        rr = sequence_logps(Hl, W0, tl, ml)
    W1 = W + 0.01
    pre = fused_dpo_loss(Hw, W1, tw, tl, rc, rr, beta=0.1, H_rejected=Hl, chosen_mask=mw, rejected_mask=ml)
    fly = fused_dpo_loss(Hw, W1, tw, tl, sequence_logps(Hw, W0, tw, mw), sequence_logps(Hl, W0, tl, ml), beta=0.1,
                         H_rejected=Hl, chosen_mask=mw, rejected_mask=ml)
    assert pre.loss.item() == fly.loss.item() and pre.loss.item() != math.log(2)


# --- 7. edge cases ------------------------------------------------------------------------------------------

def test_edge_cases():
    V, d, N = 123, 31, 6
    W = torch.randn(V, d, generator=_g(1), requires_grad=True)
    H = torch.randn(N, d, generator=_g(2))
    # chosen == rejected: Delta = 0 and exactly zero gradient
    t = torch.randint(0, V, (N,), generator=_g(3))
    out = fused_dpo_loss(H, W, t, t, torch.zeros(N), torch.zeros(N), beta=0.1)
    out.loss.backward()
    assert out.loss.item() == 0.6931471824645996 and W.grad.abs().max().item() == 0.0
    # ignore-index rows: log-prob 0, no gradient from them
    tt = torch.randint(0, V, (N, 2), generator=_g(4))
    tt[1] = -100
    W.grad = None
    lp, lse = selective_logprobs(H, W, tt)
    assert lp[1].abs().max().item() == 0.0 and torch.isfinite(lse).all()
    (lp.sum()).backward()
    g_ign = W.grad.clone()
    W.grad = None
    keep = torch.tensor([0, 2, 3, 4, 5])
    selective_logprobs(H[keep], W, tt[keep])[0].sum().backward()
    torch.testing.assert_close(g_ign, W.grad, rtol=0, atol=1e-6)
    # very large logits: finite values and gradients
    W.grad = None
    lp, lse = selective_logprobs(H * 100, W, tt, chunk_rows=2, vocab_tile=40)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(W.grad).all()
    naive, _ = dpo.logprobs_naive((H * 100).double(), W.detach().double(), tt)
    torch.testing.assert_close(lp.double(), naive, rtol=1e-5, atol=1e-2)
    # non-contiguous H, frozen H yields dW (and no dH), N = 1, V not a multiple of the tile
    Hn = torch.randn(d, N, generator=_g(5)).T
    assert not Hn.is_contiguous()
    W.grad = None
    lp, _ = selective_logprobs(Hn, W, tt, vocab_tile=50)
    lp.sum().backward()
    ref, _ = dpo.logprobs_naive(Hn.contiguous(), W.detach(), tt)
    torch.testing.assert_close(lp, ref, rtol=1e-5, atol=1e-5)
    assert W.grad is not None and W.grad.abs().sum() > 0 and Hn.grad is None
    one, _ = selective_logprobs(H[:1], W, tt[:1, :1].clamp(min=0))
    assert one.shape == (1, 1)
    # dH when H requires grad
    Hg = H.clone().requires_grad_(True)
    selective_logprobs(Hg, W, tt)[0].sum().backward()
    Hd = H.double().requires_grad_(True)
    dpo.logprobs_naive(Hd, W.detach().double(), tt)[0].sum().backward()
    torch.testing.assert_close(Hg.grad.double(), Hd.grad, rtol=1e-4, atol=1e-5)


def test_bit_identical_repeats():
    case = _dpo_case(torch.float32, seed=5)
    l1, g1 = _loss_and_grad(*case, chunk_rows=5)
    l2, g2 = _loss_and_grad(*case, chunk_rows=5)
    assert torch.equal(l1, l2) and torch.equal(g1, g2)


def test_fused_errors():
    W, H = torch.randn(20, 4), torch.randn(3, 4)
    t = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="H has d=5 but W has d=4"):
        selective_logprobs(torch.randn(3, 5), W, t)
    with pytest.raises(TypeError, match="floating-point"):
        selective_logprobs(H.long(), W, t)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 20\)"):
        selective_logprobs(H, W, torch.tensor([1, 2, 20]))
    with pytest.raises(ValueError, match="unknown impl 'cuda'"):
        selective_logprobs(H, W, t, impl="cuda")
    with pytest.raises(ValueError, match="unknown loss_type"):
        fused_dpo_loss(H, W, t, t, torch.zeros(3), torch.zeros(3), beta=0.1, loss_type="kto")
    with pytest.raises(ValueError, match="accum_dtype must be"):
        selective_logprobs(H, W, t, accum_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="chunk_rows must be a positive int"):
        selective_logprobs(H, W, t, chunk_rows=0)
    with pytest.raises(ValueError, match="shared contexts take H"):
        fused_dpo_loss(H[None], W, t[None], t[None], torch.zeros(1), torch.zeros(1), beta=0.1)
    with pytest.raises(ValueError, match="mask must have the tokens' shape"):
        sequence_logps(H[None], W, t[None], torch.ones(1, 2, dtype=torch.bool))


# --- the one-pass strategy (loss and dW over chunks of whole pairs) ---------------------------------------------

@pytest.mark.parametrize("loss_type,ls,reduction", [("sigmoid", 0.0, "mean"), ("sigmoid", 0.1, "sum"),
                                                    ("robust", 0.2, "mean"), ("hinge", 0.0, "mean"),
                                                    ("ipo", 0.0, "mean")])
def test_one_pass_equals_recompute_float64(loss_type, ls, reduction):
    case = [x.double() if x.is_floating_point() else x for x in _dpo_case(torch.float32, V=211, d=20, P=9, L=6, seed=7)]
    W, Hw, Hl, tw, tl, mw, ml, rc, rr = case
    res = {}
    for strategy, cr in (("recompute", None), ("one_pass", 1), ("one_pass", 7), ("one_pass", 10_000)):
        Wg = W.clone().requires_grad_(True)
        out = fused_dpo_loss(Hw, Wg, tw, tl, rc * 0.1, rr * 0.1, beta=0.3, H_rejected=Hl, chosen_mask=mw,
                             rejected_mask=ml, loss_type=loss_type, label_smoothing=ls, reduction=reduction,
                             strategy=strategy, chunk_rows=cr)
        out.loss.backward()
        res[(strategy, cr)] = (out, Wg.grad)
    base, gbase = res[("recompute", None)]
    for key, (out, g) in res.items():
        assert abs(out.loss.item() - base.loss.item()) <= 1e-12 * max(1.0, abs(base.loss.item()))
        torch.testing.assert_close(out.chosen_logps, base.chosen_logps, rtol=0, atol=1e-11)
        torch.testing.assert_close(out.chosen_rewards, base.chosen_rewards, rtol=0, atol=1e-12)
        torch.testing.assert_close(g, gbase, rtol=0, atol=1e-13)


def test_one_pass_errors_and_auto_choice():
    W, Hw, Hl, tw, tl, mw, ml, rc, rr = _dpo_case(torch.float32, V=50, d=8, P=3, L=2)
    kw = dict(beta=0.1, H_rejected=Hl)
    with pytest.raises(ValueError, match="unknown strategy"):
        fused_dpo_loss(Hw, W, tw, tl, rc, rr, strategy="fast", **kw)
    with pytest.raises(ValueError, match="needs reduction 'mean' or 'sum'"):
        fused_dpo_loss(Hw, W, tw, tl, rc, rr, strategy="one_pass", reduction="none", **kw)
    with pytest.raises(ValueError, match="use strategy='recompute' when H requires grad"):
        fused_dpo_loss(Hw.clone().requires_grad_(True), W, tw, tl, rc, rr, strategy="one_pass", **kw)
    with pytest.raises(ValueError, match="does not take"):
        fused_dpo_loss(Hw, W, tw, tl, rc, rr, strategy="one_pass", vocab_tile=8, **kw)
    with pytest.raises(ValueError, match="must describe the same pairs"):
        fused_dpo_loss(Hw, W, tw, tl, rc[:2], rr[:2], strategy="one_pass", **kw)
    from alignment_dynamics.dpo.fused import choose_strategy

    assert choose_strategy(Hw, W, Hl) == "one_pass"  # the torch path, frozen features, a scalar loss
    assert choose_strategy(Hw, W, Hl, reduction="none") == "recompute"
    assert choose_strategy(Hw, W, Hl, vocab_tile=8) == "recompute"
    assert choose_strategy(Hw, W, Hl, strategy="recompute") == "recompute"
    with pytest.raises(ValueError, match="unknown strategy 'fast'"):
        choose_strategy(Hw, W, Hl, strategy="fast")
    rec = dict(kw, strategy="recompute")
    with pytest.raises(ValueError, match=r"chosen \(3\) and rejected \(2\) must describe the same pairs"):
        fused_dpo_loss(Hw, W, tw, tl[:2], rc, rr, **dict(rec, H_rejected=Hl[:2]))
    with pytest.raises(ValueError, match="rejected features have d=4"):
        fused_dpo_loss(Hw, W, tw, tl, rc, rr, **dict(rec, H_rejected=Hl[..., :4]))
    with pytest.raises(ValueError, match="must have one dtype"):
        fused_dpo_loss(Hw, W, tw, tl, rc, rr, **dict(rec, H_rejected=Hl.double()))
    # auto with a differentiable H falls back to recompute and yields dH
    Hg = Hw.clone().requires_grad_(True)
    Wg = W.clone().requires_grad_(True)
    fused_dpo_loss(Hg, Wg, tw, tl, rc, rr, **kw).loss.backward()
    assert Hg.grad is not None and Wg.grad is not None
