"""Tests of the exact batched two-row trainer against the full-vocabulary float64 reference trainer."""

import math

import pytest
import torch

import alignment_dynamics.dpo as dpo

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread


A, B_ = 7, 3  # the two answer tokens ("Yes", "No")


def _problem(n=400, d=16, V=50, seed=0, m=100, shift=0.6):
    g = torch.Generator().manual_seed(seed)
    yes = torch.rand(n + m, generator=g) < 0.5
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    H = torch.randn(n + m, d, generator=g, dtype=torch.float64) + shift * torch.where(yes, 1.0, -1.0)[:, None] * mu
    W0 = 0.3 * torch.randn(V, d, generator=g, dtype=torch.float64)
    chosen, rejected = torch.where(yes, A, B_), torch.where(yes, B_, A)
    s = dpo.signs(chosen, rejected, A, B_)
    ref = dpo.precompute_reference(H, W0, chosen, rejected)
    tr, te = slice(0, n), slice(n, n + m)
    return dict(H=H[tr], W0=W0, c=chosen[tr], r=rejected[tr], s=s[tr], ref=ref[tr],
                Ht=H[te], ct=chosen[te], rt=rejected[te], st=s[te], reft=ref[te])


def _both(p, **kw):
    ref_run = dpo.train_reference(p["H"], p["W0"], p["c"], p["r"], eval_sets={"test": (p["Ht"], p["ct"], p["rt"])}, **kw)
    exact = dpo.train_two_row(p["H"], p["s"], reference=p["ref"], eval_sets={"test": (p["Ht"], p["st"], p["reft"])}, **kw)
    return ref_run, exact


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_official_protocol_trajectory_equals_reference_float64():
    """Plain SGD, a fresh batch of 128 per step, 100 steps, beta 0.01 (lr raised so the loss moves)."""
    p = _problem()
    ref_run, exact = _both(p, beta=0.01, lr=20.0, steps=100, batch_size=128, generator=1234)
    assert ref_run.train["loss"].shape == (1, 100) and ref_run.eval["test"]["loss"].shape == (1, 101)
    assert (ref_run.train["loss"] - exact.train["loss"]).abs().max().item() <= 1e-10
    assert ref_run.train["loss"][0, -1] < ref_run.train["loss"][0, 0] - 0.05  # it trains
    assert set(exact.train) == set(ref_run.train) == set(dpo.METRIC_NAMES)
    assert _max_diff(ref_run.train, exact.train) <= 1e-10
    assert _max_diff(ref_run.eval["test"], exact.eval["test"]) <= 1e-10
    assert (ref_run.head_change - exact.head_change).abs().max().item() <= 1e-12
    assert exact.head_change[0, 0].item() == 0.0 and ref_run.head_change[0, 0].item() == 0.0
    assert torch.equal(ref_run.batches, exact.batches)
    # loss at W_0 is ln 2; TRL's reward accuracy ties at 0 there
    assert exact.train["loss"][0, 0].item() == 0.6931471805599453
    assert abs(ref_run.train["loss"][0, 0].item() - math.log(2)) <= 1e-15
    assert exact.eval["test"]["rewards/accuracies"][0, 0].item() == 0.0
    # only rows a and b moved, by +v and -v: W_T - W_0 = u v_T^T
    dW = ref_run.W - p["W0"]
    others = [j for j in range(dW.shape[0]) if j not in (A, B_)]
    assert dW[others].abs().max().item() == 0.0
    torch.testing.assert_close(dW[A], exact.v[0, -1], rtol=0, atol=1e-12)
    torch.testing.assert_close(dW[B_], -exact.v[0, -1], rtol=0, atol=1e-12)
    # the mean logit over the vocabulary (TRL's logits/*) stays constant under two-row updates
    lg = ref_run.eval["test"]["logits/chosen"][0]
    assert (lg - lg[0]).abs().max().item() <= 1e-13


@pytest.mark.parametrize("loss_type,ls,opt,mom,lr", [
    ("sigmoid", 0.1, "sgd", 0.0, 2.0), ("robust", 0.2, "sgd", 0.9, 1.0), ("hinge", 0.0, "sgd", 0.0, 2.0),
    ("ipo", 0.0, "sgd", 0.0, 0.002), ("sigmoid", 0.0, "adam", 0.0, 0.01)])
def test_losses_and_optimisers_match_reference(loss_type, ls, opt, mom, lr):
    p = _problem(n=300, seed=1)
    ref_run, exact = _both(p, beta=0.5, lr=lr, steps=30, batch_size=64, generator=5, loss_type=loss_type,
                           label_smoothing=ls, optimizer=opt, momentum=mom)
    assert _max_diff(ref_run.train, exact.train) <= 1e-10
    assert _max_diff(ref_run.eval["test"], exact.eval["test"]) <= 1e-10


def test_flip_and_start_v_match_reference_with_shifted_start():
    p = _problem(seed=2)
    v0 = 0.5 * torch.randn(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    W_start = p["W0"].clone()
    W_start[A] += v0
    W_start[B_] -= v0
    kw = dict(beta=0.1, lr=3.0, steps=40, batch_size=128, generator=9, flip=True)
    ref_run = dpo.train_reference(p["H"], p["W0"], p["c"], p["r"], start_W=W_start,
                                  eval_sets={"test": (p["Ht"], p["ct"], p["rt"])}, **kw)
    exact = dpo.train_two_row(p["H"], p["s"], reference=p["ref"], start_v=v0,
                              eval_sets={"test": (p["Ht"], p["st"], p["reft"])}, **kw)
    assert _max_diff(ref_run.train, exact.train) <= 1e-10
    assert _max_diff(ref_run.eval["test"], exact.eval["test"]) <= 1e-10
    # with the reference equal to the start, the loss trajectory does not depend on the start (paper.md §6)
    base = dpo.train_two_row(p["H"], p["s"], reference=p["ref"], **kw)
    assert (base.train["loss"] - exact.train["loss"]).abs().max().item() <= 1e-13
    assert not torch.equal(base.train["outputs/accuracies"], exact.train["outputs/accuracies"])


def test_first_full_batch_step_norm_is_proportional_to_distinguishability():
    p = _problem(n=400, seed=4)
    bal = torch.cat([torch.nonzero(p["s"] > 0).flatten()[:150], torch.nonzero(p["s"] < 0).flatten()[:150]])
    H, s = p["H"][bal], p["s"][bal]
    eta, beta = 0.7, 0.01
    run = dpo.train_two_row(H, s, beta=beta, lr=eta, steps=1, batch_size=None, generator=0)
    mu_plus, mu_minus = H[s > 0].mean(0), H[s < 0].mean(0)
    want = math.sqrt(2) * eta * beta / 4 * torch.linalg.norm(mu_plus - mu_minus).item()
    assert abs(run.head_change[0, 1].item() - want) <= 1e-15 * max(1.0, want) * 10


def test_batched_runs_equal_single_runs_and_per_behaviour_metrics():
    ps = [_problem(n=n, seed=10 + i) for i, n in enumerate([300, 260, 300])]
    H = [p["H"] for p in ps]
    s = [p["s"] for p in ps]
    refs = [p["ref"] for p in ps]
    bids = [torch.arange(p["H"].shape[0]) % 2 for p in ps]
    evs = [(p["Ht"], p["st"], p["reft"]) for p in ps]
    batched = dpo.train_two_row(H, s, reference=refs, behavior_id=bids, beta=[0.1, 0.2, 0.1], lr=[1.0, 1.0, 3.0],
                                steps=25, batch_size=100, generator=[1, 2, 3], eval_sets={"test": evs})
    assert batched.runs == 3 and batched.train["loss"].shape == (3, 25)
    assert batched.train_by_behavior["loss"].shape == (3, 25, 2)
    for r in range(3):
        single = dpo.train_two_row(H[r], s[r], reference=refs[r], beta=[0.1, 0.2, 0.1][r], lr=[1.0, 1.0, 3.0][r],
                                   steps=25, batch_size=100, generator=r + 1, eval_sets={"test": evs[r]})
        assert torch.equal(single.v[0], batched.v[r])
        assert torch.equal(single.eval["test"]["loss"][0], batched.eval["test"]["loss"][r])
        # the overall batch mean is the count-weighted mean of the per-behaviour means
        idx = batched.batches[r]
        n1 = (bids[r][idx] == 1).double().sum(1)
        mix = (batched.train_by_behavior["loss"][r, :, 0] * (100 - n1) + batched.train_by_behavior["loss"][r, :, 1] * n1) / 100
        torch.testing.assert_close(mix, batched.train["loss"][r], rtol=0, atol=1e-14)


def test_numba_and_torch_paths_agree_and_are_deterministic():
    p = _problem(seed=5)
    kw = dict(beta=0.05, lr=5.0, steps=50, batch_size=128, generator=3, reference=p["ref"])
    a = dpo.train_two_row(p["H"], p["s"], impl="numba", **kw)
    b = dpo.train_two_row(p["H"], p["s"], impl="torch", **kw)
    c = dpo.train_two_row(p["H"], p["s"], impl="numba", **kw)
    assert (a.v - b.v).abs().max().item() <= 1e-13
    assert torch.equal(a.v, c.v) and torch.equal(a.train["loss"], c.train["loss"])
    f32 = dpo.train_two_row(p["H"].float(), p["s"], dtype=torch.float32, **kw)
    assert f32.v.dtype == torch.float32
    assert (f32.train["loss"] - a.train["loss"]).abs().max().item() <= 1e-5
    no_ref = dpo.train_two_row(p["H"], p["s"], beta=0.05, lr=5.0, steps=50, batch_size=128, generator=3)
    assert set(no_ref.train) == {"loss", "rewards/margins", "rewards/accuracies"}
    assert torch.equal(no_ref.train["loss"], a.train["loss"])


def test_two_row_errors():
    p = _problem(n=200)
    kw = dict(beta=0.1, lr=1.0, steps=3, batch_size=32, generator=0)
    with pytest.raises(ValueError, match="weight_decay > 0 moves every row"):
        dpo.train_two_row(p["H"], p["s"], weight_decay=0.01, **kw)
    with pytest.raises(ValueError, match=r"must hold \+1"):
        dpo.train_two_row(p["H"], p["s"] * 2, **kw)
    with pytest.raises(ValueError, match="one sign per pair"):
        dpo.train_two_row(p["H"], p["s"][:10], **kw)
    with pytest.raises(ValueError, match="unknown impl"):
        dpo.train_two_row(p["H"], p["s"], impl="cuda", **kw)
    with pytest.raises(ValueError, match="per-run arguments disagree"):
        dpo.train_two_row([p["H"], p["H"]], p["s"], **{**kw, "generator": [1, 2, 3]})
    with pytest.raises(ValueError, match="start_v must be"):
        dpo.train_two_row(p["H"], p["s"], start_v=torch.zeros(5), **kw)
    with pytest.raises(ValueError, match="unknown optimizer"):
        dpo.train_two_row(p["H"], p["s"], optimizer="rmsprop", **kw)
    with pytest.raises(ValueError, match="describes 100 pairs but the data has 200"):
        dpo.train_two_row(p["H"], p["s"], reference=p["reft"], **kw)
    with pytest.raises(ValueError, match="do not use the tokens"):
        dpo.signs(torch.tensor([7, 1]), torch.tensor([3, 3]), A, B_)
    with pytest.raises(ValueError, match="lr must be a positive"):
        dpo.train_reference(p["H"], p["W0"], p["c"], p["r"], **{**kw, "lr": -1.0})


def test_full_batches_of_unequal_sizes_equal_single_runs():
    ps = [_problem(n=n, seed=20 + i) for i, n in enumerate([150, 90])]
    kw = dict(beta=0.1, lr=2.0, steps=15, batch_size=None, generator=0)
    both = dpo.train_two_row([p["H"] for p in ps], [p["s"] for p in ps], reference=[p["ref"] for p in ps], **kw)
    assert both.batches.shape == (2, 15, 150) and int(both.batches[1, 0, 90]) == -1
    for r, p in enumerate(ps):
        one = dpo.train_two_row(p["H"], p["s"], reference=p["ref"], **kw)
        torch.testing.assert_close(one.v[0], both.v[r], rtol=0, atol=1e-14)
        torch.testing.assert_close(one.train["loss"][0], both.train["loss"][r], rtol=0, atol=1e-14)
    ref_run = dpo.train_reference(ps[1]["H"], ps[1]["W0"], ps[1]["c"], ps[1]["r"], **kw)
    assert (ref_run.train["loss"][0] - both.train["loss"][1]).abs().max().item() <= 1e-10


def test_runs_sharing_features_with_other_signs():
    p = _problem(n=300, seed=30)
    kw = dict(beta=0.1, lr=2.0, steps=10, batch_size=64, generator=[5, 5, 5])
    H = p["H"].contiguous()
    shared = dpo.train_two_row([H, H, H[100:]], [p["s"], -p["s"], p["s"][100:]], **kw)
    alone = [dpo.train_two_row(h, s_, beta=0.1, lr=2.0, steps=10, batch_size=64, generator=5)
             for h, s_ in ((H, p["s"]), (H.clone(), -p["s"]), (H[100:].clone(), p["s"][100:]))]
    for r in range(3):
        torch.testing.assert_close(shared.v[r], alone[r].v[0], rtol=0, atol=1e-14)


def test_eval_sets_of_unequal_sizes_per_run_equal_single_runs():
    """Per-run evaluation sets may differ in size (behaviours have different test splits)."""
    ps = [_problem(n=n, m=m, seed=40 + i) for i, (n, m) in enumerate([(300, 60), (260, 90)])]
    H, s, refs = [p["H"] for p in ps], [p["s"] for p in ps], [p["ref"] for p in ps]
    evs = [(p["Ht"], p["st"], p["reft"], torch.arange(p["Ht"].shape[0]) % 2) for p in ps]
    assert evs[0][0].shape[0] != evs[1][0].shape[0]
    batched = dpo.train_two_row(H, s, reference=refs, beta=0.1, lr=2.0, steps=15, batch_size=64,
                                generator=[5, 6], flip=[False, True], eval_sets={"test": evs})
    for r in range(2):
        single = dpo.train_two_row(H[r], s[r], reference=refs[r], beta=0.1, lr=2.0, steps=15, batch_size=64,
                                   generator=5 + r, flip=[False, True][r], eval_sets={"test": evs[r]})
        for k, v in single.eval["test"].items():
            torch.testing.assert_close(batched.eval["test"][k][r], v[0], rtol=0, atol=1e-13)
        for k, v in single.eval_by_behavior["test"].items():
            torch.testing.assert_close(batched.eval_by_behavior["test"][k][r], v[0], rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="for every run's set or for none"):
        dpo.train_two_row(H, s, reference=refs, beta=0.1, lr=2.0, steps=2, batch_size=64, generator=[5, 6],
                          eval_sets={"test": [evs[0], evs[1][:2]]})
