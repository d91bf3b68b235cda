"""Property tests (Hypothesis) of the pure functions: likelihoods, the ELBO loss, the anomaly
scores and the contamination threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from anovae.likelihoods import bernoulli_nll, gaussian_nll, kl_standard_normal, log_normal
from anovae.losses import elbo_loss
from anovae.nets.mlp import MLPAutoencoder, MLPConfig
from anovae.scores import MONTE_CARLO_SCORES, SCORES, common_noise, feature_scores, row_scores
from anovae.thresholds import contamination_threshold

_f64 = torch.float64


def tensors(shape: tuple[int, ...], lo: float, hi: float) -> st.SearchStrategy[torch.Tensor]:
    """Float64 tensors of ``shape`` with finite values in [lo, hi]."""
    return arrays(np.float64, shape, elements=st.floats(lo, hi)).map(torch.from_numpy)


def shapes() -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(1, 6), st.integers(1, 5))


def tiny_net(d: int = 3, latent: int = 2, *, likelihood: str = "gaussian",
             variance: str = "per_sample", variational: bool = True, seed: int = 0
             ) -> MLPAutoencoder:
    """A small random network in eval mode (seeded without touching torch's global state)."""
    cfg = MLPConfig(n_features=d, hidden_dims=(8,), latent_dim=latent, likelihood=likelihood,
                    variance=variance, variational=variational)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLPAutoencoder(cfg).eval()


class IdentityAE(torch.nn.Module):
    """A plain autoencoder that reconstructs perfectly: code = x, decoder mean = code."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        return z, None

    def mean(self, loc: torch.Tensor) -> torch.Tensor:
        return loc

    def nll(self, x: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor | None
            ) -> torch.Tensor:
        return gaussian_nll(x, loc, torch.zeros((), dtype=loc.dtype))


# -- likelihoods ----------------------------------------------------------------------------------
@given(shapes().flatmap(lambda s: st.tuples(tensors(s, -20, 20), tensors(s, -8, 8))))
def test_kl_is_non_negative_and_matches_torch(args):
    mu, logvar = args
    kl = kl_standard_normal(mu, logvar)
    assert kl.shape == mu.shape
    assert torch.all(kl >= -1e-12)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)),
        torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(kl, expected, rtol=1e-9, atol=1e-9)


def test_kl_is_zero_at_the_prior():
    assert torch.equal(kl_standard_normal(torch.zeros(4, 3), torch.zeros(4, 3)),
                       torch.zeros(4, 3))


@given(shapes().flatmap(lambda s: st.tuples(tensors(s, -50, 50), tensors(s, -50, 50),
                                            tensors(s, -6, 6))))
def test_gaussian_nll_matches_torch_normal(args):
    x, mean, logvar = args
    expected = -torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(x)
    torch.testing.assert_close(gaussian_nll(x, mean, logvar), expected, rtol=1e-9, atol=1e-9)


@given(shapes().flatmap(lambda s: st.tuples(tensors(s, 0, 1), tensors(s, -30, 30))))
def test_bernoulli_nll_is_bce_and_non_negative(args):
    x, logits = args
    nll = bernoulli_nll(x, logits)
    assert torch.all(nll >= 0)
    p = torch.sigmoid(logits)
    bce = -(x * torch.log(p) + (1 - x) * torch.log1p(-p))
    ok = logits.abs() < 15  # where the naive formula is itself accurate in float64
    torch.testing.assert_close(nll[ok], bce[ok], rtol=1e-6, atol=1e-9)
    assert torch.all(torch.isfinite(nll))


@given(shapes().flatmap(lambda s: st.tuples(st.just(s), tensors(s, -30, 30))))
def test_bernoulli_nll_matches_torch_on_binary_targets(args):
    shape, logits = args
    x = (torch.arange(math.prod(shape), dtype=_f64).reshape(shape) % 2)
    expected = -torch.distributions.Bernoulli(logits=logits).log_prob(x)
    torch.testing.assert_close(bernoulli_nll(x, logits), expected, rtol=1e-9, atol=1e-9)


@given(shapes().flatmap(lambda s: st.tuples(tensors(s, 0, 1), tensors(s, -30, 30))))
def test_bernoulli_nll_is_torchs_bce_inside_the_range(args):
    x, logits = args
    # bit for bit: trained models (mixed tables' booleans, Bernoulli images) stay as they were
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none")
    assert torch.equal(bernoulli_nll(x, logits), expected)


@given(shapes().flatmap(lambda s: st.tuples(tensors(s, 0, 1), tensors(s, -30, 30),
                                            tensors(s, 0.01, 1e6))))
def test_bernoulli_nll_grows_with_the_distance_outside_the_range(args):
    # below 0 or above 1 a value costs its bound's NLL plus at least one nat per range width:
    # the plain cross-entropy is linear in x and would fall on one side (far below 0 looks
    # likelier than 0 when the logit is negative), hiding the farthest outliers
    x, logits, d = args
    for bound, outside in ((0.0, -d), (1.0, 1.0 + d)):
        at_bound = bernoulli_nll(torch.full_like(x, bound), logits)
        far = bernoulli_nll(outside, logits)
        assert torch.all(far >= at_bound + d * (1 + logits.abs()) * (1 - 1e-9))
        assert torch.all(bernoulli_nll(outside * 2 - bound, logits) > far)
        # training on such a value: the bound's gradient (a target above 1 pushes p up)
        lg = logits.clone().requires_grad_(True)
        bernoulli_nll(outside, lg).sum().backward()
        lb = logits.clone().requires_grad_(True)
        bernoulli_nll(torch.full_like(x, bound), lb).sum().backward()
        assert torch.equal(lg.grad, lb.grad)


@given(shapes().flatmap(lambda s: st.tuples(tensors(s, -10, 10), tensors(s, -10, 10),
                                            tensors(s, -5, 5))))
def test_log_normal_matches_torch(args):
    z, mu, logvar = args
    prior = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    torch.testing.assert_close(log_normal(z), prior.log_prob(z).sum(-1))
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    torch.testing.assert_close(log_normal(z, mu, logvar), q.log_prob(z).sum(-1))


# -- the ELBO loss --------------------------------------------------------------------------------
def _manual_elbo(net: MLPAutoencoder, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, ...]:
    """Reconstruction and KL written out: per-row sums, then batch means."""
    g = torch.Generator().manual_seed(seed)
    mu, logvar = net.encode(x)
    eps = torch.randn(mu.shape, generator=g, dtype=mu.dtype)
    loc, dec_logvar = net.decode(mu + torch.exp(0.5 * logvar) * eps)
    recon = net.nll(x, loc, dec_logvar).sum(-1).mean()
    kl = kl_standard_normal(mu, logvar).sum(-1).mean()
    return recon, kl


@given(batch=st.integers(1, 9), seed=st.integers(0, 2**16),
       likelihood=st.sampled_from(["gaussian", "bernoulli"]),
       variance=st.sampled_from(["per_sample", "per_feature", "fixed"]))
def test_elbo_terms_are_batch_means_of_row_sums(batch, seed, likelihood, variance):
    net = tiny_net(4, 3, likelihood=likelihood, variance=variance, seed=seed)
    x = torch.rand(batch, 4, generator=torch.Generator().manual_seed(seed + 1))
    terms = elbo_loss(net, x, beta=1.0, generator=torch.Generator().manual_seed(seed))
    recon, kl = _manual_elbo(net, x, seed)
    torch.testing.assert_close(terms.reconstruction, recon)
    torch.testing.assert_close(terms.kl, kl)
    torch.testing.assert_close(terms.loss, recon + kl)


@given(beta=st.floats(0.0, 8.0), seed=st.integers(0, 2**16))
def test_beta_scales_only_the_kl_term(beta, seed):
    net = tiny_net(seed=seed)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed + 1))
    t1 = elbo_loss(net, x, beta=1.0, generator=torch.Generator().manual_seed(seed))
    tb = elbo_loss(net, x, beta=beta, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(tb.reconstruction, t1.reconstruction)
    torch.testing.assert_close(tb.kl, t1.kl)
    torch.testing.assert_close(tb.loss, t1.reconstruction + beta * t1.kl)


@given(free_bits=st.floats(0.0, 5.0), seed=st.integers(0, 2**16))
def test_free_bits_floor_each_latent_dimension(free_bits, seed):
    latent = 3
    net = tiny_net(3, latent, seed=seed)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(seed + 1))
    plain = elbo_loss(net, x, generator=torch.Generator().manual_seed(seed))
    floored = elbo_loss(net, x, free_bits=free_bits,
                        generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(floored.kl, plain.kl)  # the reported KL is the true one
    mu, logvar = net.encode(x)
    kl_dims = kl_standard_normal(mu, logvar).mean(0)  # (L,)
    expected = plain.reconstruction + torch.clamp(kl_dims, min=free_bits).sum()
    torch.testing.assert_close(floored.loss, expected)
    assert floored.loss >= plain.reconstruction + latent * free_bits - 1e-5
    assert floored.loss >= plain.loss - 1e-6


def test_free_bits_stop_the_kl_gradient_below_the_floor():
    net = tiny_net(seed=3)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(4))
    terms = elbo_loss(net, x, beta=1.0, free_bits=1e6, generator=torch.Generator().manual_seed(0))
    (grad_floored,) = torch.autograd.grad(terms.loss, net.encoder[0].weight, retain_graph=True)
    (grad_recon,) = torch.autograd.grad(terms.reconstruction, net.encoder[0].weight)
    torch.testing.assert_close(grad_floored, grad_recon)


def test_uniform_weights_equal_the_plain_mean():
    net = tiny_net(seed=1)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(2))
    a = elbo_loss(net, x, generator=torch.Generator().manual_seed(0))
    b = elbo_loss(net, x, generator=torch.Generator().manual_seed(0), weights=torch.full((7,), 3.0))
    torch.testing.assert_close(a.loss, b.loss)


def test_plain_autoencoder_loss_has_no_kl():
    net = tiny_net(variational=False, variance="fixed", seed=0)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    terms = elbo_loss(net, x, beta=1.0, generator=torch.Generator().manual_seed(0))
    assert terms.kl.item() == 0.0
    expected = gaussian_nll(x, net(x), torch.zeros(())).sum(-1).mean()
    torch.testing.assert_close(terms.loss, expected)


# -- scores ---------------------------------------------------------------------------------------
_score_case = st.tuples(
    st.sampled_from(SCORES), st.sampled_from(["gaussian", "bernoulli"]),
    st.sampled_from(["per_sample", "per_feature", "fixed"]), st.integers(0, 2**16),
    arrays(np.float32, st.tuples(st.integers(1, 6), st.just(3)),
           elements=st.floats(-100, 100, width=32)),
)


@given(_score_case)
def test_feature_scores_are_finite_and_sum_to_row_scores(case):
    score, likelihood, variance, seed, xs = case
    net = tiny_net(3, 2, likelihood=likelihood, variance=variance, seed=seed)
    x = torch.from_numpy(xs)
    eps = common_noise(8, 2, seed)
    with torch.no_grad():
        fs = feature_scores(net, x, score, eps)
        rs = row_scores(net, x, score, eps)
    assert fs.shape == x.shape and rs.shape == (x.shape[0],)
    assert torch.all(torch.isfinite(fs)) and torch.all(torch.isfinite(rs))
    torch.testing.assert_close(fs.sum(-1), rs)
    if score == "reconstruction":
        assert torch.all(fs >= 0)
    if likelihood == "bernoulli" and score == "reconstruction_probability":
        assert torch.all(fs >= 0)  # a Bernoulli NLL is a -log of a probability


@given(_score_case)
def test_scores_of_a_row_do_not_depend_on_its_batch(case):
    score, likelihood, variance, seed, xs = case
    net = tiny_net(3, 2, likelihood=likelihood, variance=variance, seed=seed)
    x = torch.from_numpy(xs)
    eps = common_noise(8, 2, seed)
    with torch.no_grad():
        together = row_scores(net, x, score, eps)
        alone = torch.cat([row_scores(net, x[i:i + 1], score, eps) for i in range(len(x))])
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-3)


@given(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 4)),
              elements=st.floats(-1e3, 1e3)))
def test_reconstruction_score_is_zero_for_a_perfect_reconstruction(xs):
    x = torch.from_numpy(xs)
    fs = feature_scores(IdentityAE(), x, "reconstruction")
    assert torch.equal(fs, torch.zeros_like(x))


@settings(max_examples=12)
@given(seed=st.integers(0, 2**16), likelihood=st.sampled_from(["gaussian", "bernoulli"]))
def test_iwae_is_the_tighter_bound(seed, likelihood):
    net = tiny_net(3, 2, likelihood=likelihood, seed=seed)
    x = torch.rand(16, 3, generator=torch.Generator().manual_seed(seed + 1))
    eps = common_noise(64, 2, seed)
    with torch.no_grad():
        iwae = row_scores(net, x, "iwae", eps)
        elbo = row_scores(net, x, "elbo", eps)
        # The Monte-Carlo ELBO on the same samples (KL sampled too): Jensen makes the IWAE bound
        # tighter row by row, not just on average.
        mu, logvar = net.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps[:, None, :]  # (S, B, L)
        loc, dec_logvar = net.decode(z)
        log_w = (-net.nll(x, loc, dec_logvar).sum(-1) + log_normal(z)
                 - log_normal(z, mu, logvar))  # (S, B)
        mc_elbo = -log_w.mean(0)
    assert torch.all(iwae <= mc_elbo + 1e-4)
    assert iwae.mean() <= elbo.mean() + 0.05 * elbo.abs().mean() + 1e-3


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_reconstruction_probability_is_an_and_cho_mean_likelihood(likelihood):
    # An & Cho (2015), Algorithm 4: the mean of p(x|z_l) over posterior draws; the score is its
    # -log, which Jensen puts at or below the mean of -log p(x|z_l) (the ELBO's first term)
    net = tiny_net(3, 2, likelihood=likelihood, seed=11)
    x = torch.rand(6, 3, generator=torch.Generator().manual_seed(12))
    eps = common_noise(32, 2, 13)
    with torch.no_grad():
        got = row_scores(net, x, "reconstruction_probability", eps)
        mu, logvar = net.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps[:, None, :]  # (S, B, L)
        loc, dec_logvar = net.decode(z)
        nll = net.nll(x, loc, dec_logvar).sum(-1).double()  # (S, B)
        want = -torch.log(torch.exp(-nll).mean(0))
        parts = feature_scores(net, x, "reconstruction_probability", eps)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    assert torch.all(got <= nll.mean(0).float() + 1e-4)
    torch.testing.assert_close(parts.sum(-1), got, rtol=1e-5, atol=1e-4)
    with torch.no_grad():  # one draw: the likelihood of that draw
        one = row_scores(net, x, "reconstruction_probability", eps[:1])
    torch.testing.assert_close(one.double(), nll[0], rtol=1e-5, atol=1e-4)


def test_iwae_with_one_sample_is_the_sampled_elbo():
    net = tiny_net(seed=5)
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(6))
    eps = common_noise(1, 2, 9)
    with torch.no_grad():
        iwae = row_scores(net, x, "iwae", eps)
        mu, logvar = net.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps  # (B, L)
        loc, dec_logvar = net.decode(z)
        expected = (net.nll(x, loc, dec_logvar).sum(-1) - log_normal(z)
                    + log_normal(z, mu, logvar))
    torch.testing.assert_close(iwae, expected, rtol=1e-5, atol=1e-4)


class CollapsedPosterior(torch.nn.Module):
    """``tiny_net`` whose encoder reports a posterior variance that underflows float32."""

    def __init__(self, net: MLPAutoencoder, logvar: float) -> None:
        super().__init__()
        self.net, self.logvar = net, logvar

    def encode(self, x):
        mu, logvar = self.net.encode(x)
        return mu + 1.0, torch.full_like(logvar, self.logvar)  # |mu| ~ 1: z - mu rounds to 0

    def decode(self, z):
        return self.net.decode(z)

    def nll(self, x, loc, logvar):
        return self.net.nll(x, loc, logvar)


@pytest.mark.parametrize("logvar", [-40.0, -120.0, -400.0])
def test_iwae_stays_finite_when_the_posterior_variance_underflows(logvar):
    # A far outlier drives the posterior log-variance to -100 and below: exp(-logvar) is inf in
    # float32 and z - mu rounds to 0, so log q(z|x) must come from eps, not from (z - mu).
    net = CollapsedPosterior(tiny_net(seed=2), logvar)
    x = torch.rand(5, 3, generator=torch.Generator().manual_seed(3))
    eps = common_noise(8, 2, 4)
    with torch.no_grad():
        iwae = row_scores(net, x, "iwae", eps)
        mu, lv = net.encode(x)
        z = mu + torch.exp(0.5 * lv) * eps[:, None, :]  # (S, B, L): z == mu in float32
        log_q = -0.5 * (math.log(2 * math.pi) + lv + eps.pow(2)[:, None, :]).sum(-1)  # (S, B)
        loc, dec_logvar = net.decode(z)
        log_w = -net.nll(x, loc, dec_logvar).sum(-1) + log_normal(z) - log_q
        expected = -(torch.logsumexp(log_w, 0) - math.log(8))
    assert torch.isfinite(iwae).all()
    torch.testing.assert_close(iwae, expected, rtol=1e-5, atol=1e-3)


@given(n=st.integers(1, 32), latent=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_common_noise_is_deterministic(n, latent, seed):
    a, b = common_noise(n, latent, seed), common_noise(n, latent, seed)
    assert a.shape == (n, latent) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, common_noise(n, latent, seed + 1))


def test_score_errors():
    net, x = tiny_net(), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown score"):
        feature_scores(net, x, "mahalanobis")
    for score in MONTE_CARLO_SCORES:
        with pytest.raises(ValueError, match="common noise"):
            feature_scores(net, x, score)
        with pytest.raises(ValueError, match="variational"):
            feature_scores(IdentityAE(), x, score, common_noise(2, 3, 0))


# -- thresholds -----------------------------------------------------------------------------------
@given(arrays(np.float64, st.integers(1, 200), elements=st.floats(-1e6, 1e6)),
       st.floats(0.001, 0.5))
def test_contamination_threshold_is_the_pyod_percentile(scores, contamination):
    t = contamination_threshold(scores, contamination)
    assert t == np.percentile(scores, 100 * (1 - contamination))
    assert np.mean(scores > t) <= contamination + 1 / len(scores)  # interpolated percentile


@pytest.mark.parametrize("contamination", [0.0, -0.1, 0.51, float("nan")])
def test_contamination_threshold_rejects_bad_contamination(contamination):
    with pytest.raises(ValueError, match="contamination"):
        contamination_threshold(np.arange(10.0), contamination)
