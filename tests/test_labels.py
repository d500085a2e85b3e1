"""Models of labels and the autoencoder baselines: conditional VAEs, the semi-supervised M2,
point-mass (AE) and denoising (DAE) guides; exact answers where there are some."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from pyro_vae import cli
from pyro_vae.config import Config, ModelConfig
from pyro_vae.registries import build_vae
from pyro_vae.batches import EpochBatches
from pyro_vae.datasets import labelled_subset
from pyro_vae.distributions import GaussianProposal
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.infer import log_likelihood, log_weights
from pyro_vae.infer.objectives import ELBO, SemiSupervisedELBO
from pyro_vae.runs import evaluate_run, load_run

# ---------------------------------------------------------------------------------------
# point-mass guides: the autoencoder baselines


def ae(noise=0.0):
    vae = build_vae(ModelConfig(guide="delta", latent_dim=3, hidden=[16],
                                guide_options={"noise": noise}), (64,))
    return vae.train()


def test_point_mass_guide_loss_is_the_map_objective_at_the_encoders_point(binary_batch):
    vae = ae()
    loss = ELBO().differentiable_loss(vae.model, vae.guide, binary_batch)
    z = vae.posterior.encoder(binary_batch)
    expected = -(vae.likelihood(z).log_prob(binary_batch).sum() +
                 vae.prior(binary_batch.shape[0]).log_prob(z).sum())
    torch.testing.assert_close(loss, expected)


def test_denoising_guide_encodes_a_masked_input_and_scores_the_clean_one(binary_batch):
    x = torch.ones(2000, 64)
    vae = ae(noise=0.25)
    kept = vae.posterior.corrupt(x)
    assert abs(kept.mean().item() - 0.75) < 0.01 and set(kept.unique().tolist()) == {0.0, 1.0}
    vae.eval()
    assert torch.equal(vae.posterior.corrupt(x), x)  # no corruption in evaluation
    vae.train()
    pyro.set_rng_seed(3)
    loss = ELBO().differentiable_loss(vae.model, vae.guide, binary_batch)
    pyro.set_rng_seed(3)
    z = vae.posterior.encoder(vae.posterior.corrupt(binary_batch))
    expected = -(vae.likelihood(z).log_prob(binary_batch).sum() +
                 vae.prior(binary_batch.shape[0]).log_prob(z).sum())
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, ELBO().differentiable_loss(ae().model, ae().guide,
                                                               binary_batch))


def test_point_mass_guide_stays_a_point_mass_in_eval_mode(binary_batch):
    vae = ae().eval()
    q = vae.posterior(binary_batch)
    assert isinstance(q, dist.Delta)
    torch.testing.assert_close(q.v, vae.posterior.encoder(binary_batch))
    site = pyro.poutine.trace(vae.guide).get_trace(binary_batch).nodes["z"]
    assert isinstance(site["fn"], dist.Delta)


def test_point_mass_guide_is_evaluated_with_an_explicit_gaussian_proposal(binary_batch, small_vae):
    vae = ae().eval()
    proposal = vae.proposal()
    assert isinstance(proposal, GaussianProposal) and proposal.scale == 0.1
    assert proposal.description == "gaussian(0.1) around the point-mass guide"
    q = pyro.poutine.trace(proposal).get_trace(binary_batch).nodes["z"]["fn"]
    point = vae.posterior.encoder(binary_batch)
    torch.testing.assert_close(q.base_dist.loc, point)
    torch.testing.assert_close(q.base_dist.scale, torch.full_like(point, 0.1))
    result = log_likelihood(vae.model, proposal, binary_batch, num_particles=50,
                            diagnostics=False)
    assert torch.isfinite(result.log_likelihood).all()
    # the IWAE bound of the 50 weights lies above their mean (the ELBO estimate)
    assert (result.log_likelihood >= result.elbo).all()
    assert (result.log_likelihood > result.elbo + 0.1).any()
    assert small_vae.proposal() == small_vae.guide  # a guide with a density is its own


def test_autoencoder_evaluation_is_a_lower_bound_that_says_its_proposal():
    """One latent dimension: the exact log p(x) = log int p(z) p(x|z) dz by quadrature;
    the run's estimate lies below it and eval.json's summary names the proposal."""
    vae = build_vae(ModelConfig(guide="delta", latent_dim=1, hidden=[8],
                                guide_options={"eval_scale": 0.3}), (6,))
    x = torch.bernoulli(torch.full((5, 6), 0.4))
    config = Config()
    config.eval.k = 2000
    summary, result = evaluate_run(vae, x, config, "cpu")
    assert summary["proposal"] == "gaussian(0.3) around the point-mass guide"
    grid = torch.linspace(-10.0, 10.0, 20001, dtype=torch.float64)
    with torch.no_grad():
        log_joint = dist.Normal(0.0, 1.0).log_prob(grid)[:, None] + \
            vae.likelihood(grid.float().view(-1, 1, 1)).log_prob(x).double()
    exact = torch.logsumexp(log_joint, 0) + math.log(grid[1] - grid[0])
    assert (result.log_likelihood.double() <= exact + 0.05).all()
    assert (result.elbo.double() < exact).all()


# ---------------------------------------------------------------------------------------
# the evaluator on conditional models and on a discrete latent, with exact log p(x)


def test_conditional_log_likelihood_is_exact_with_the_exact_posterior():
    """z ~ N(0, 1); x | z, y ~ N(z + m_y, s^2) per coordinate (2 coordinates); with the
    exact q(z | x, y) every weight is log p(x | y) = log N(x; m_y, I + 1 1^T)."""
    m = torch.tensor([[-2.0, 1.0], [0.5, 0.5], [3.0, -1.0]], dtype=torch.float64)
    s2 = 0.3

    def model(x, y):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal(z.unsqueeze(-1) + m[y], s2 ** 0.5).to_event(1), obs=x)

    def guide(x, y):
        r = (x - m[y]).sum(-1)
        var = 1.0 / (1.0 + 2.0 / s2)
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(var * r / s2, var ** 0.5))

    y = torch.tensor([0, 1, 2, 1, 0])
    x = m[y] + torch.randn(5, 2, dtype=torch.float64)
    cov = s2 * torch.eye(2, dtype=torch.float64) + torch.ones(2, 2, dtype=torch.float64)
    exact = dist.MultivariateNormal(m[y], cov).log_prob(x)
    result = log_likelihood(model, guide, (x, y), num_particles=30, batch_size=2,
                            particle_batch=7, diagnostics=False)
    torch.testing.assert_close(result.log_likelihood, exact)
    weights = log_weights(model, guide, (x, y), num_particles=4)
    torch.testing.assert_close(weights, exact.expand(4, 5))


def test_discrete_label_site_sampled_by_the_guide_gives_exact_log_likelihood():
    """y ~ Cat(1/3); z ~ N(0, 1); x | y, z ~ N(z + m_y, s^2). With the exact q(y | x) and
    q(z | x, y) every weight is log p(x) = log sum_y p(y) N(x; m_y, 1 + s^2)."""
    m = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
    s2 = 0.5

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(torch.full((3,), 1 / 3, dtype=x.dtype)))
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal(z + m[y], s2 ** 0.5), obs=x)

    def guide(x):
        log_post = dist.Normal(m, (1 + s2) ** 0.5).log_prob(x.unsqueeze(-1))
        with pyro.plate("data", x.shape[0], dim=-1):
            y = pyro.sample("y", dist.Categorical(logits=log_post))
            var = s2 / (1 + s2)
            pyro.sample("z", dist.Normal(var * (x - m[y]) / s2, var ** 0.5))

    x = torch.tensor([-2.5, 0.0, 1.0, 3.5], dtype=torch.float64)
    exact = torch.logsumexp(dist.Normal(m, (1 + s2) ** 0.5).log_prob(x.unsqueeze(-1)), -1) \
        - math.log(3)
    torch.testing.assert_close(log_weights(model, guide, x, num_particles=20),
                               exact.expand(20, 4))


# ---------------------------------------------------------------------------------------
# M2: the semi-supervised objective against a direct computation


def tiny_m2():
    """An M2 model on 4-dimensional binary data with 3 classes and a point-mass q(z|x,y),
    so that its losses are deterministic and can be written out."""
    torch.manual_seed(0)
    vae = build_vae(ModelConfig(guide="delta", latent_dim=2, hidden=[5], classifier_hidden=[6],
                                semi_supervised=True, num_classes=3), (4,))
    return vae.train()


def direct_terms(vae, x, y):
    """log p(y) + log p(z) + log p(x | z, y) at z = f(x, y), one value per image."""
    onehot = torch.nn.functional.one_hot(y, 3).float()
    z = vae.posterior.encoder(torch.cat([x, onehot], -1))
    return (math.log(1 / 3) + vae.prior(x.shape[0]).log_prob(z) +
            vae.likelihood(torch.cat([z, onehot], -1)).log_prob(x))


def test_m2_enumerated_and_observed_losses_equal_a_direct_computation():
    vae = tiny_m2()
    x = torch.bernoulli(torch.full((6, 4), 0.5))
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    empty_x, empty_y = x[:0], y[:0]
    objective = SemiSupervisedELBO(classifier_weight=0.0)
    log_q = torch.log_softmax(vae.classifier(x), -1)  # (6, 3)

    # all labels enumerated: -sum_b [sum_y q(y|x) terms(x, y) + H(q(y|x))]
    enumerated = objective.differentiable_loss(vae.model, vae.guide, (x, empty_x, empty_y))
    per_label = torch.stack([direct_terms(vae, x, torch.full((6,), c)) for c in range(3)], -1)
    expected = -((log_q.exp() * (per_label - log_q)).sum(-1)).sum()
    torch.testing.assert_close(enumerated, expected)

    # all labels observed: -sum_b terms(x_b, y_b), plus alpha (-log q(y_b|x_b))
    observed = objective.differentiable_loss(vae.model, vae.guide, (empty_x, x, y))
    torch.testing.assert_close(observed, -direct_terms(vae, x, y).sum())
    weighted = SemiSupervisedELBO(classifier_weight=7.0).differentiable_loss(
        vae.model, vae.guide, (empty_x, x, y))
    torch.testing.assert_close(weighted, observed - 7.0 * log_q[torch.arange(6), y].sum())

    # both at once add up
    both = objective.differentiable_loss(vae.model, vae.guide, (x, x, y))
    torch.testing.assert_close(both, enumerated + observed)


def test_m2_sites_and_evaluation():
    vae = tiny_m2().eval()
    x = torch.bernoulli(torch.full((5, 4), 0.5))
    trace = pyro.poutine.trace(vae.guide).get_trace(x)
    assert trace.nodes["y"]["value"].shape == (5, 3)  # one-hot, sampled without labels
    trace = pyro.poutine.trace(vae.guide).get_trace(x, torch.tensor([0, 1, 2, 0, 1]))
    assert "y" not in trace.nodes  # observed in the model, not sampled
    model = pyro.poutine.trace(vae.model).get_trace(x, torch.tensor([0, 1, 2, 0, 1]))
    assert model.nodes["y"]["is_observed"]
    result = log_likelihood(vae.model, vae.proposal(), x, num_particles=40, diagnostics=False)
    assert torch.isfinite(result.log_likelihood).all()


# ---------------------------------------------------------------------------------------
# data: labels ride along, labelled subsets


def test_batches_carry_labels_and_labelled_batches_cycle():
    ids = torch.arange(50, dtype=torch.float32).unsqueeze(1)
    labels = torch.arange(50) % 10
    for rank, size in ((0, 1), (1, 2)):
        for x, y in EpochBatches(ids, 8, "none", seed=1, labels=labels, rank=rank,
                                 world_size=size).epoch():
            assert torch.equal(x.flatten().long() % 10, y)
    keep = labelled_subset(labels, 20, seed=0)
    batches = EpochBatches(ids, 10, "none", seed=1, labelled=(ids[keep], labels[keep]),
                           labelled_batch_size=4)
    seen = []
    for x, xl, yl in batches.epoch():
        assert x.shape == (10, 1) and xl.shape == (4, 1)
        assert torch.equal(xl.flatten().long() % 10, yl)
        seen += xl.flatten().long().tolist()
    # 5 steps x 4 = 20 labelled images: each of the subset exactly once
    assert sorted(seen) == keep.tolist()


def test_labelled_subset_is_balanced_and_checked():
    labels = torch.arange(100) % 10
    keep = labelled_subset(labels, 30, seed=0)
    assert torch.bincount(labels[keep]).tolist() == [3] * 10
    assert not torch.equal(keep, labelled_subset(labels, 30, seed=1))
    assert torch.equal(labelled_subset(labels, 0, seed=0), torch.arange(100))
    with pytest.raises(DataError, match="between the number of classes"):
        labelled_subset(labels, 5, seed=0)
    with pytest.raises(DataError, match="fewer than"):
        labelled_subset(torch.tensor([0] * 20 + [1] * 2), 10, seed=0)


def test_bad_models_of_labels_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="MLP"):
        build_vae(ModelConfig(conditional=True, num_classes=10, network="conv"), (64,),
                  (1, 8, 8))
    with pytest.raises(ConfigError, match="VampPrior"):
        build_vae(ModelConfig(conditional=True, num_classes=10, prior="vamp"), (64,))
    with pytest.raises(ConfigError, match="exclude each other"):
        build_vae(ModelConfig(conditional=True, semi_supervised=True, num_classes=10), (64,))
    with pytest.raises(ConfigError, match="flat VAEs"):
        build_vae(ModelConfig(conditional=True, num_classes=10, latent_dim=[4, 2]), (64,))
    with pytest.raises(ConfigError, match="needs a label"):
        build_vae(ModelConfig(prior="conditional_normal"), (64,))
    vae = build_vae(ModelConfig(conditional=True, num_classes=10, latent_dim=3, hidden=[8]),
                    (64,))
    with pytest.raises(ValueError, match="pass y"):
        vae.model(torch.zeros(2, 64))
    with pytest.raises(ValueError, match=r"labels in \[0, 10\)"):
        vae.model(torch.zeros(2, 64), torch.tensor([3, 10]))
    assert cli.main(["train", "vae", "--labels", "10", "--epochs", "1", "--out",
                     str(tmp_path / "r"), "--quiet"]) == 2
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------
# the conditional VAE from the command line


@pytest.mark.slow
def test_cvae_draws_the_class_it_is_asked_for(tmp_path, capsys):
    """A classifier trained on the digits themselves recognises most samples drawn with
    label c as c."""
    run = tmp_path / "cvae"
    assert cli.main(["train", "cvae", "--data", "digits", "--epochs", "60", "--out", str(run),
                     "--quiet", "--set", "eval.k=5"]) == 0
    digits = load_digits()
    classifier = LogisticRegression(max_iter=2000).fit(digits.data / 16.0, digits.target)
    vae, config, _ = load_run(run, device="cpu")
    assert config.model.num_classes == 10  # resolved from the data and stored
    pyro.set_rng_seed(1)
    correct = []
    for c in range(10):
        images = vae.sample(50, y=torch.full((50,), c))
        correct.append((classifier.predict(images.numpy()) == c).mean())
    assert sum(correct) / 10 > 0.8, correct
    # the command line draws one class into a PNG
    out = tmp_path / "three.png"
    assert cli.main(["sample", str(run), "--label", "3", "-n", "16", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["sample", str(run), "--label", "10", "-o", str(tmp_path / "x.png")]) == 2
    assert "--label must lie in [0, 10)" in capsys.readouterr().err
    # evaluate and score read the test labels: log p(x | y)
    assert cli.main(["evaluate", str(run), "--k", "5", "--quiet"]) == 0
    assert cli.main(["score", str(run), "--k", "5", "-o", str(tmp_path / "s.csv"),
                     "--quiet"]) == 0
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 1 + 297
