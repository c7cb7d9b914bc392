"""Tests of alignment_dynamics.dpo.reference and .sampling: the semantics of the DPO kernels."""

import math

import pytest
import torch

import alignment_dynamics.dpo as dpo

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread


LN2_F64 = 0.6931471805599453  # ln 2 (golden, independent of our code)
LN2_F32 = 0.6931471824645996  # ln 2 rounded to float32


def _rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- golden values ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,golden", [(torch.float64, LN2_F64), (torch.float32, LN2_F32)])
def test_loss_is_ln2_at_initialisation(dtype, golden):
    logp = _rand(8, seed=1, dtype=dtype) - 3.0
    ref = logp.clone()
    loss, per, cr, rr = dpo.dpo_loss(logp, logp - 1.0, ref, ref - 1.0, beta=0.01)
    assert loss.dtype == dtype
    assert loss.item() == golden
    assert torch.all(per == golden)
    assert torch.all(cr == 0) and torch.all(rr == 0)


def test_golden_sigmoid_losses():
    # Delta = [0, 10, 20], beta = 0.1  ->  -log sigmoid([0, 1, 2]) = log(1 + e^-x)
    golden = torch.tensor([0.6931471805599453, 0.31326168751822286, 0.12692801104297263], dtype=torch.float64)
    delta = torch.tensor([0.0, 10.0, 20.0], dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    _, per, _, _ = dpo.dpo_loss(delta, zero, zero, zero, beta=0.1, reduction="none")
    torch.testing.assert_close(per, golden, rtol=0, atol=1e-15)
    assert abs(per[1].item() - 0.313262) < 1e-6 and abs(per[2].item() - 0.126928) < 1e-6


def test_loss_formulas_and_derivatives():
    delta = torch.linspace(-30, 30, 121, dtype=torch.float64)
    b, eps = 0.2, 0.15
    ls = lambda x: torch.log(torch.sigmoid(x))  # noqa: E731  (a second, naive formula)
    expect = {
        ("sigmoid", 0.0): -ls(b * delta),
        ("sigmoid", eps): -(1 - eps) * ls(b * delta) - eps * ls(-b * delta),
        ("robust", eps): (-(1 - eps) * ls(b * delta) + eps * ls(-b * delta)) / (1 - 2 * eps),
        ("hinge", 0.0): torch.clamp(1 - b * delta, min=0),
        ("ipo", 0.0): (delta - 1 / (2 * b)) ** 2,
    }
    for (lt, e), want in expect.items():
        x = delta.clone().requires_grad_(True)
        got = dpo.loss_from_delta(x, b, lt, e)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        (grad,) = torch.autograd.grad(got.sum(), x)
        torch.testing.assert_close(dpo.loss_derivative(delta, b, lt, e), grad, rtol=1e-12, atol=1e-14)


def test_sgd_step_lowers_loss():
    H, W = _rand(64, 8, seed=2), _rand(20, 8, seed=3)
    c, r = torch.full((64,), 4), torch.full((64,), 9)
    ref = dpo.precompute_reference(H, W, c, r)
    W1 = (W + 0.01 * _rand(20, 8, seed=4)).requires_grad_(True)
    logp, _ = dpo.logprobs_naive(H, W1, torch.stack([c, r], 1))
    loss, *_ = dpo.dpo_loss(logp[:, 0], logp[:, 1], ref.chosen_logps, ref.rejected_logps, beta=0.5)
    loss.backward()
    with torch.no_grad():
        logp2, _ = dpo.logprobs_naive(H, W1 - 0.1 * W1.grad, torch.stack([c, r], 1))
        loss2, *_ = dpo.dpo_loss(logp2[:, 0], logp2[:, 1], ref.chosen_logps, ref.rejected_logps, beta=0.5)
    assert loss2 < loss


# --- log-probs, reference quantities, metrics ---------------------------------------------------------

def test_logprobs_naive_matches_log_softmax_and_ignores():
    H, W = _rand(6, 5, seed=5), _rand(11, 5, seed=6)
    t = torch.tensor([[1, 2], [0, 10], [3, -100], [4, 4], [5, 6], [-100, -100]])
    logp, lse = dpo.logprobs_naive(H, W, t)
    full = torch.log_softmax(H @ W.T, dim=1)
    for n in range(6):
        for k in range(2):
            want = 0.0 if t[n, k] == -100 else full[n, t[n, k]].item()
            assert abs(logp[n, k].item() - want) < 1e-14
    torch.testing.assert_close(lse, torch.logsumexp(H @ W.T, 1))
    one, _ = dpo.logprobs_naive(H, W, t[:, 0].clamp(min=0))
    assert one.shape == (6,)


def test_precompute_reference_quantities():
    H, W = _rand(30, 7, seed=7), _rand(13, 7, seed=8)
    c = torch.randint(0, 13, (30,), generator=torch.Generator().manual_seed(0))
    r = (c + 1 + torch.randint(0, 12, (30,), generator=torch.Generator().manual_seed(1))) % 13
    ref = dpo.precompute_reference(H, W, c, r, chunk_rows=7)
    z = H @ W.T
    for i in range(30):
        others = [j for j in range(13) if j not in (int(c[i]), int(r[i]))]
        assert abs(ref.rest_lse[i].item() - torch.logsumexp(z[i, others], 0).item()) < 1e-13
        assert abs(ref.mean_logit[i].item() - z[i].mean().item()) < 1e-13
    torch.testing.assert_close(torch.logaddexp(ref.rest_lse, torch.logaddexp(ref.chosen_logits, ref.rejected_logits)),
                               ref.lse, rtol=0, atol=1e-13)
    torch.testing.assert_close(ref.chosen_logps, ref.chosen_logits - ref.lse, rtol=0, atol=1e-13)
    sub = ref[torch.tensor([3, 1])]
    assert len(sub) == 2 and sub.swapped().chosen_logps[0] == ref.rejected_logps[3]


def test_metric_identities():
    pc, pr, rc, rr = (_rand(50, seed=s) - 4 for s in range(10, 14))
    m = dpo.dpo_metrics(pc, pr, rc, rr, beta=0.1)
    delta = (pc - rc) - (pr - rr)
    torch.testing.assert_close(m["rewards/margins"], (0.1 * delta).mean())
    assert m["rewards/accuracies"].item() == (delta > 0).double().mean().item()
    assert m["outputs/accuracies"].item() == (pc > pr).double().mean().item()
    assert m["logps/chosen"].item() == pc.mean().item()
    assert set(m) == set(dpo.METRIC_NAMES) - {"logits/chosen", "logits/rejected"}
    at_init = dpo.dpo_metrics(rc, rr, rc, rr, beta=0.1)
    assert at_init["rewards/accuracies"].item() == 0.0  # ties at initialisation
    bid = torch.arange(50) % 3
    mb = dpo.dpo_metrics(pc, pr, rc, rr, beta=0.1, behavior_id=bid, n_behaviors=4)
    assert mb["loss"].shape == (4,) and math.isnan(mb["loss"][3].item())
    torch.testing.assert_close(mb["loss"][1], dpo.loss_from_delta(delta[bid == 1], 0.1).mean())


# --- errors -------------------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    x = torch.zeros(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown loss_type 'dpo'"):
        dpo.dpo_loss(x, x, x, x, beta=0.1, loss_type="dpo")
    with pytest.raises(ValueError, match="beta must be a positive"):
        dpo.dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        dpo.dpo_loss(x, x, x, x, beta=0.1, label_smoothing=0.5)
    with pytest.raises(ValueError, match="applies to the 'sigmoid' and 'robust'"):
        dpo.dpo_loss(x, x, x, x, beta=0.1, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="one shape"):
        dpo.dpo_loss(x, x, x, x[:3], beta=0.1)
    with pytest.raises(ValueError, match="unknown reduction"):
        dpo.dpo_loss(x, x, x, x, beta=0.1, reduction="avg")
    H, W = _rand(4, 3), _rand(5, 3)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 5\)"):
        dpo.logprobs_naive(H, W, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(ValueError, match="H has d=3 but W has d=4"):
        dpo.logprobs_naive(H, _rand(5, 4), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="integer token ids"):
        dpo.logprobs_naive(H, W, torch.zeros(4))
    with pytest.raises(ValueError, match="has 3 rows but the features have 4"):
        dpo.precompute_reference(H, W, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="behavior ids must lie in"):
        dpo.group_mean(x, torch.tensor([0, 1, 2, 3]), 3)


# --- sampling -------------------------------------------------------------------------------------------

def test_sample_batches_distinct_uniform_and_reproducible():
    b = dpo.sample_batches([900, 466], 128, 50, [1234, 1234])
    assert b.shape == (2, 50, 128)
    for r, n in enumerate([900, 466]):
        assert int(b[r].min()) >= 0 and int(b[r].max()) < n
        assert all(len(set(row.tolist())) == 128 for row in b[r])  # no repeats within a batch
    assert torch.equal(b, dpo.sample_batches([900, 466], 128, 50, [1234, 1234]))
    # one run alone draws what it draws inside a batch of runs (one stream per run)
    assert torch.equal(b[1], dpo.sample_batches(466, 128, 50, 1234)[0])
    counts = torch.bincount(dpo.sample_batches(10, 3, 30000, 7).flatten(), minlength=10).double()
    expected = 30000 * 3 / 10
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 30.0  # 9 degrees of freedom: P(chi2 > 30) < 1e-3
    full = dpo.sample_batches([3, 5], None, 2, 0)
    assert full[0, 0].tolist() == [0, 1, 2, -1, -1] and full[1, 1].tolist() == [0, 1, 2, 3, 4]


def test_sample_batches_errors():
    with pytest.raises(ValueError, match="larger than a training set of 100"):
        dpo.sample_batches([100], 128, 5, 0)
    with pytest.raises(ValueError, match="got 2 seeds/generators for 3 runs"):
        dpo.sample_batches([200, 200, 200], 10, 5, [1, 2])
    with pytest.raises(TypeError, match="generator must be"):
        dpo.sample_batches(200, 10, 5, "seed")
    with pytest.raises(ValueError, match="steps must be a positive int"):
        dpo.sample_batches(200, 10, 0, 1)
