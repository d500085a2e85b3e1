"""Figure functions draw what they say, on a tiny model, and return their axes."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pyro_vae import plots  # noqa: E402

from pyro_vae import latent_plots
from pyro_vae.config import ModelConfig# noqa: E402
from pyro_vae.registries import build_vae# noqa: E402
from pyro_vae.infer import latent_report, log_likelihood  # noqa: E402

X = torch.bernoulli(torch.full((12, 64), 0.4), generator=torch.Generator().manual_seed(0))


@pytest.fixture(params=[4, [6, 3]], ids=["flat", "hierarchical"])
def vae(request):
    torch.manual_seed(0)
    return build_vae(ModelConfig(latent_dim=request.param, hidden=[16]), (64,))


def test_traversal_changes_only_the_traversed_dimension(vae, monkeypatch):
    decoded = []
    original = vae.likelihood.forward

    def spy(z):
        decoded.append(z.detach().clone())
        return original(z)

    monkeypatch.setattr(vae.likelihood, "forward", spy)
    ax = latent_plots.plot_traversal(vae, X[0], (1, 8, 8), dims=[0, 2], steps=5, span=2.0)
    z = decoded[-1]
    assert z.shape[0] == 10 and len(ax.images) == 1
    base = latent_plots.latent_point(vae, X[:1])[0]
    assert torch.allclose(z[:5, 0], torch.linspace(-2, 2, 5))
    assert torch.allclose(z[:5, 1:], base[1:].expand(5, -1))
    assert torch.allclose(z[5:, 2], torch.linspace(-2, 2, 5))
    plt.close("all")


def test_interpolation_ends_at_the_inputs_latents(vae, monkeypatch):
    decoded = []
    original = vae.likelihood.forward
    monkeypatch.setattr(vae.likelihood, "forward", lambda z: decoded.append(z) or original(z))
    latent_plots.plot_interpolation(vae, X[:2], X[2:4], (1, 8, 8), steps=4)
    z = decoded[-1].reshape(2, 4, -1)
    assert torch.allclose(z[:, 0], latent_plots.latent_point(vae, X[:2]), atol=1e-6)
    assert torch.allclose(z[:, -1], latent_plots.latent_point(vae, X[2:4]), atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        latent_plots.plot_interpolation(vae, X[:2], X[:3], (1, 8, 8))
    plt.close("all")


def test_estimate_figures(vae):
    a = log_likelihood(vae.model, vae.guide, X, num_particles=30, seed=0)
    b = log_likelihood(vae.model, vae.guide, X, num_particles=30, seed=1)
    ax = plots.plot_bound_vs_k([a, b], ["seed 0", "seed 1"])
    assert len(ax.get_legend().get_texts()) == 2
    line = ax.lines[0]
    assert list(line.get_xdata()) == [1, 10, 30]
    assert line.get_ydata()[-1] == pytest.approx(a.mean, abs=1e-6)
    ax = plots.plot_khat(a)
    assert ax.get_xlabel().startswith("Pareto k-hat")
    ax = plots.plot_comparison([a, b], ["A", "B"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B"]
    with pytest.raises(ValueError, match="labels"):
        plots.plot_bound_vs_k([a, b], ["one"])
    report = latent_report(vae.model, vae.guide, X)
    ax = latent_plots.plot_kl_per_dim(report)
    assert len(ax.lines) == len(report.kl_per_dim)
    plt.close("all")


def test_embedding_coloured_by_label(vae):
    labels = torch.arange(12) % 3
    ax = latent_plots.plot_embedding(vae, X, labels)
    assert len(ax.collections) == 3  # one scatter per label
    assert sum(len(c.get_offsets()) for c in ax.collections) == 12
    assert "PCA" in ax.get_title()
    with pytest.raises(ValueError, match="11 labels for 12"):
        latent_plots.plot_embedding(vae, X, labels[:11])
    with pytest.raises(ValueError, match="method"):
        latent_plots.plot_embedding(vae, X, method="umap")
    plt.close("all")


def test_temperature_scales_the_prior_spread(vae, monkeypatch):
    decoded = []
    original = vae.likelihood.forward
    monkeypatch.setattr(vae.likelihood, "forward", lambda z: decoded.append(z) or original(z))
    torch.manual_seed(0)
    vae.sample(4000, temperature=0.5)
    torch.manual_seed(0)
    vae.sample(4000, temperature=1.0)
    cold, warm = decoded
    if not hasattr(vae, "num_layers"):  # flat: N(0, T^2)
        assert cold.std().item() == pytest.approx(0.5, rel=0.05)
        assert warm.std().item() == pytest.approx(1.0, rel=0.05)
    assert cold.std() < warm.std()
    axes = plots.plot_samples(vae, (1, 8, 8), num_samples=9, temperatures=(0.5, 1.0))
    assert len(axes) == 2 and axes[0].get_title() == "temperature 0.5"
    mog = build_vae(ModelConfig(latent_dim=4, hidden=[16], prior="mog"), (64,))
    with pytest.raises(ValueError, match="Gaussian prior"):
        mog.sample(3, temperature=0.5)
    assert mog.sample(3).shape == (3, 64)
    plt.close("all")


def test_kl_curves_need_recorded_terms():
    metrics = [{"epoch": e, "validation_kl/z1": 5.0 + e, "validation_kl/z2": 1.0 / e,
                "validation_reconstruction": -50.0 + e} for e in (1, 2, 3)]
    ax = plots.plot_kl_curves(metrics)
    assert [line.get_label() for line in ax.lines] == ["KL z1", "KL z2"]
    assert list(ax.lines[0].get_ydata()) == [6.0, 7.0, 8.0]
    with pytest.raises(ValueError, match="no validation_kl"):
        plots.plot_kl_curves([{"epoch": 1, "validation_elbo": -3.0}])
    plt.close("all")


def test_curves_mark_the_warmup():
    metrics = [{"epoch": e, "train_elbo": -10.0 + e, "validation_elbo": -11.0 + e,
                "kl_weight": min(1.0, e / 3)} for e in (1, 2, 3, 4)]
    ax = plots.plot_curves(metrics)
    assert any("warm-up" in t.get_text() for t in ax.get_legend().get_texts())
    ax = plots.plot_curves([{**m, "kl_weight": 1.0} for m in metrics])
    assert not any("warm-up" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close("all")


def test_plot_samples_leaves_the_global_rng_alone(small_vae):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    plots.plot_samples(small_vae, (1, 8, 8), num_samples=4, temperatures=(1.0,))
    assert torch.equal(torch.rand(3), expected)


def test_image_grid_row_labels_sit_on_their_rows():
    ax = plots.plot_images(torch.rand(6, 64), (1, 8, 8), nrow=3, row_labels=["a", "b"])
    centres = ax.get_yticks()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    # rows start after one pixel of padding and are 8 + 1 pixels apart
    assert list(centres) == [1 + 3.5, 10 + 3.5]
    with pytest.raises(ValueError, match="3 row labels for a grid of 2 rows"):
        plots.plot_images(torch.rand(6, 64), (1, 8, 8), nrow=3, row_labels=["a", "b", "c"])
    plt.close("all")


def test_mutual_information_heat_map_labels_and_scale():
    matrix = [[0.1, 2.0], [0.5, 0.0], [0.0, 0.3]]
    ax = plots.plot_mutual_information(matrix, ["x", "y"], vmax=3.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z0", "z1", "z2"]
    assert ax.images[0].get_clim() == (0.0, 3.0)
    assert len(ax.texts) == 6 and ax.texts[1].get_text() == "2.00"
    assert plots.plot_mutual_information(matrix, ["x", "y"]).images[0].get_clim()[1] == 2.0
    with pytest.raises(ValueError, match=r"expected a \(D, 3\) matrix"):
        plots.plot_mutual_information(matrix, ["x", "y", "z"])
    plt.close("all")
