"""Tests of the posterior-collapse tools: KL weight schedules (constant, linear warm-up, cyclical),
their use by ``fit``, and free bits (value against tests/reference.py, gradients checked by finite
differences away from the kink, zero KL gradient below the floor), plus bad input.
"""
import numpy as np
import pytest

import scratchvae as sv
from scratchvae import schedules
from scratchvae.gradcheck import check_gradients
from tests import reference as ref


# ====================================================================== schedules
def test_constant_schedule():
    s = schedules.constant(0.7)
    assert [s(t) for t in (0, 1, 10, 10**6)] == [0.7] * 4


def test_linear_warmup_values():
    s = schedules.linear_warmup(4, beta=2.0)
    want = [2.0 * min(1.0, (t + 1) / 4) for t in range(7)]
    assert [s(t) for t in range(7)] == pytest.approx(want, rel=1e-15)
    assert [s(t) for t in range(7)] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0, 2.0], rel=1e-15)


def test_cyclical_values():
    s = schedules.cyclical(4, ratio=0.5, beta=1.0)
    assert [s(t) for t in range(8)] == pytest.approx([0.5, 1, 1, 1, 0.5, 1, 1, 1], rel=1e-15)
    s = schedules.cyclical(5, ratio=1.0, beta=3.0)
    assert [s(t) for t in range(6)] == pytest.approx([0.6, 1.2, 1.8, 2.4, 3.0, 0.6], rel=1e-15)


def test_make_schedule_by_name():
    assert schedules.make_schedule("constant", beta=0.3)(5) == 0.3
    assert schedules.make_schedule("linear", beta=1.0, n_steps=10)(4) == pytest.approx(0.5)
    cyc = schedules.make_schedule("cyclical", beta=1.0, n_steps=10, ratio=0.5)
    assert cyc(12) == pytest.approx(0.6)


@pytest.mark.parametrize("call,name", [
    (lambda: schedules.make_schedule("exponential"), "schedule"),
    (lambda: schedules.linear_warmup(0), "n_steps"),
    (lambda: schedules.cyclical(0), "period"),
    (lambda: schedules.cyclical(4, ratio=0.0), "ratio"),
    (lambda: schedules.cyclical(4, ratio=1.5), "ratio"),
    (lambda: schedules.constant(-1.0), "beta"),
    (lambda: schedules.linear_warmup(3, beta=-0.1), "beta"),
])
def test_bad_schedule_arguments_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_fit_calls_the_schedule_once_per_step_in_order():
    x = (np.random.default_rng(0).random((12, 6)) < 0.5).astype(np.float64)
    m = sv.VAE(6, hidden_dims=(4,), latent_dim=2, activation="tanh", seed=0)
    seen = []

    def schedule(t):
        seen.append(t)
        return schedules.linear_warmup(6)(t)

    h = sv.fit(m, x, epochs=2, batch_size=4, beta=schedule, progress=False)
    assert seen == list(range(6))
    assert h["beta"] == pytest.approx([0.5, 1.0])     # the beta of each epoch's last step


def test_fit_kl_warmup_is_a_linear_schedule_over_epochs():
    x = (np.random.default_rng(1).random((12, 6)) < 0.5).astype(np.float64)
    runs = []
    for beta in (dict(kl_warmup=2, beta=1.0), dict(beta=schedules.linear_warmup(6, 1.0))):
        m = sv.VAE(6, hidden_dims=(4,), latent_dim=2, activation="tanh", seed=0)
        h = sv.fit(m, x, epochs=3, batch_size=4, progress=False, **beta)
        runs.append((h["beta"], m.params))
    assert runs[0][0] == pytest.approx([0.5, 1.0, 1.0])
    assert runs[0][0] == runs[1][0]
    for key in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][key], runs[1][1][key], err_msg=key)


# ====================================================================== free bits
LAMBDA = 0.5


def free_bits_case():
    """A model whose three latent dimensions have mean KL clearly above (dim 0) and below
    (dims 1, 2) the floor LAMBDA, so finite differences never cross the kink."""
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=3, activation="tanh", seed=2)
    m.params["enc.b_mu"][:] = [2.0, 0.0, 0.0]
    m.params["enc.W_mu"][:, 1:] *= 0.1
    m.params["enc.b_logvar"][:] = [0.0, 0.0, -1.0]
    x = (np.random.default_rng(3).random((5, 6)) < 0.5).astype(np.float64)
    eps = np.random.default_rng(4).standard_normal((2, 5, 3))
    mu, logvar = ref.encoder(m.params, x, "tanh")[:2]
    kl_bar = (0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar)).mean(axis=0)
    assert kl_bar[0] > LAMBDA + 0.5 and np.all(kl_bar[1:] < LAMBDA - 0.2), kl_bar
    return m, x, eps, kl_bar


def loss_at(m, x, eps, beta, free_bits):
    return lambda p: m.loss(x, n_samples=eps.shape[0], eps=eps, beta=beta, free_bits=free_bits)


def test_free_bits_loss_matches_the_reference_formula():
    m, x, eps, kl_bar = free_bits_case()
    for beta in (1.0, 0.3):
        got = m.loss(x, n_samples=2, eps=eps, beta=beta, free_bits=LAMBDA)
        want = ref.vae_forward(m.params, x, eps, activation="tanh", beta=beta,
                               free_bits=LAMBDA)["loss"]
        assert got == pytest.approx(want, rel=1e-12)
        # the floor replaces the small dimensions' KL by LAMBDA
        recon = -ref.vae_forward(m.params, x, eps, activation="tanh")["ll"].mean()
        assert got == pytest.approx(recon + beta * (kl_bar[0] + 2 * LAMBDA), rel=1e-12)


def test_free_bits_gradients_pass_finite_differences_away_from_the_kink():
    m, x, eps, _ = free_bits_case()
    _, grads = m.loss_and_grads(x, n_samples=2, eps=eps, beta=1.0, free_bits=LAMBDA)
    grads = {key: g.copy() for key, g in grads.items()}    # kept past the next call
    rep = check_gradients(loss_at(m, x, eps, 1.0, LAMBDA), m.params, grads, n_directions=3,
                          rng=np.random.default_rng(5))
    assert rep.passed, str(rep)
    # the check has power: the plain ELBO's gradient (no floor) fails against the free-bits loss
    _, plain = m.loss_and_grads(x, n_samples=2, eps=eps, beta=1.0)
    wrong = check_gradients(loss_at(m, x, eps, 1.0, LAMBDA), m.params, plain, n_directions=3,
                            rng=np.random.default_rng(5))
    assert not wrong.passed


def test_below_the_floor_the_kl_gradient_is_zero():
    m, x, eps, _ = free_bits_case()
    def grads(**kw):   # a copy: the returned arrays live until the model's next call
        return {key: g.copy() for key, g in m.loss_and_grads(x, n_samples=2, eps=eps, **kw)[1].items()}
    fb = grads(beta=1.0, free_bits=LAMBDA)
    plain = grads(beta=1.0)
    recon_only = grads(beta=0.0)
    # per latent dimension j: the head columns of dim 0 (above) see the KL, dims 1, 2 do not
    for key in ("enc.W_mu", "enc.b_mu", "enc.W_logvar", "enc.b_logvar"):
        np.testing.assert_allclose(fb[key][..., 0], plain[key][..., 0], rtol=1e-12, atol=1e-15,
                                   err_msg=f"{key} dim 0 (above the floor)")
        np.testing.assert_allclose(fb[key][..., 1:], recon_only[key][..., 1:], rtol=1e-12,
                                   atol=1e-15, err_msg=f"{key} dims 1, 2 (below the floor)")
        assert not np.allclose(plain[key][..., 1:], recon_only[key][..., 1:]), key
    # every dimension below the floor: the KL term is a constant and the gradient is the recon's
    big = 10.0
    loss, fb_all = m.loss_and_grads(x, n_samples=2, eps=eps, beta=1.0, free_bits=big)
    loss0, _ = m.loss_and_grads(x, n_samples=2, eps=eps, beta=0.0)
    assert loss == pytest.approx(loss0 + 3 * big, rel=1e-14)
    for key in fb_all:
        np.testing.assert_array_equal(fb_all[key], recon_only[key], err_msg=key)


def test_free_bits_gradcheck_through_the_public_checker():
    m, x, eps, _ = free_bits_case()
    rep = sv.gradcheck(m, x, n_samples=2, eps=eps, free_bits=LAMBDA, wrt=("params",),
                       n_directions=2)
    assert rep.passed, str(rep)


# ====================================================================== bad input
def test_negative_free_bits_and_unknown_objective_name_the_argument():
    m, x, eps, _ = free_bits_case()
    with pytest.raises(ValueError, match="free_bits"):
        m.loss_and_grads(x, n_samples=2, eps=eps, free_bits=-0.1)
    with pytest.raises(ValueError, match="free_bits"):
        sv.fit(m, x, epochs=1, free_bits=-1.0, progress=False)
    with pytest.raises(ValueError, match="objective"):
        m.loss_and_grads(x, n_samples=2, eps=eps, objective="vimco")
    with pytest.raises(ValueError, match="objective"):
        sv.fit(m, x, epochs=1, objective="elbo2", progress=False)
