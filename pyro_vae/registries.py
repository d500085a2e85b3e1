"""The registries that turn recipe names into components, and building a VAE from them.

Registries are plain dicts from a name to a class (:data:`PRIORS`, :data:`GUIDES`,
:data:`LIKELIHOODS`, :data:`INFERENCE`); each class has ``build(ctx, **options)``.
:func:`build_vae` composes the components a :class:`~pyro_vae.model_config.ModelConfig` names;
:func:`check_model_size` and :func:`check_step_memory` refuse a model that cannot fit in
memory before it is built.
"""

import dataclasses
import inspect
import os
from dataclasses import dataclass

import torch

from .model_config import check_discrete_latents, positive_int
from .errors import ConfigError
from .adversary import build_discriminator
from .categorical import CategoricalGuide, CategoricalPrior
from .vq import CodePrior, VectorQuantizedGuide
from .guides import (DiagonalNormalGuide, FullCovNormalGuide, IAFGuide, PlanarGuide, RadialGuide,
                     SplineGuide)
from .hierarchy import (BottomUpGuide, GaussianConditional, HierarchicalVAE, LadderGuide,
                        TopDownGuide, TopPosterior)
from .likelihoods import (BernoulliLikelihood, ContinuousBernoulliLikelihood,
                          DiscretizedLogisticLikelihood, GaussianLikelihood)
from .nets import MLP, JoinedInputs, event_size
from .point_mass import DeltaGuide
from .priors import (ConditionalNormalPrior, FlowPrior, MixtureOfGaussiansPrior,
                     StandardNormalPrior, VampPrior)
from .vae import VAE

#: Priors by name; each class has ``build(ctx, **options)``.
PRIORS = {
    "standard_normal": StandardNormalPrior,
    "conditional_normal": ConditionalNormalPrior,
    "mog": MixtureOfGaussiansPrior,
    "vamp": VampPrior,
    "flow": FlowPrior,
    "categorical": CategoricalPrior,
    "vq": CodePrior,
}


#: Guides by name; each class has ``build(ctx, **options)``.
GUIDES = {
    "diagonal_normal": DiagonalNormalGuide,
    "delta": DeltaGuide,
    "full_cov_normal": FullCovNormalGuide,
    "iaf": IAFGuide,
    "planar": PlanarGuide,
    "radial": RadialGuide,
    "spline": SplineGuide,
    "categorical": CategoricalGuide,
    "vq": VectorQuantizedGuide,
}


#: Inference orders of a hierarchical guide (``model.inference``).
INFERENCE = {"bottom_up": BottomUpGuide, "ladder": LadderGuide, "top_down": TopDownGuide}


#: Likelihoods by name; each class has ``build(ctx, **options)``.
LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "continuous_bernoulli": ContinuousBernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "discretized_logistic": DiscretizedLogisticLikelihood,
}


@dataclass
class BuildContext:
    """What every component is built from (besides its own options).

    :ivar tuple event_shape: shape of one datapoint.
    :ivar int latent_dim: D.
    :ivar list hidden: hidden sizes of the encoder; the decoder gets them reversed.
    :ivar str activation: activation name.
    :ivar str network: ``"mlp"`` or ``"conv"``.
    :ivar tuple image_shape: ``(C, H, W)`` of one image (for convolutional networks).
    :ivar guide: the guide module, once built (the VampPrior shares it).
    :ivar int context_dim: the size of a conditional prior's context y (0: none).
    """

    event_shape: tuple
    latent_dim: int
    hidden: list
    activation: str
    network: str = "mlp"
    image_shape: tuple = None
    guide: object = None
    context_dim: int = 0

    @property
    def networks(self):
        """The keyword arguments that choose the encoder/decoder kind."""
        return {"network": self.network, "image_shape": self.image_shape}


def _lookup(registry, name, what):
    try:
        return registry[name]
    except KeyError:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {sorted(registry)}") from None


def component_options(cls):
    """The options (keyword arguments of ``cls.build`` after ``ctx``) and their defaults."""
    params = list(inspect.signature(cls.build).parameters.values())[1:]
    return {p.name: p.default for p in params}


def build_component(registry, name, what, ctx, options):
    """Build ``registry[name]`` with ``options``.

    :raises ConfigError: for an unknown name (listing the valid ones), an option the
        component does not take (listing the ones it does), or an invalid value.
    """
    cls = _lookup(registry, name, what)
    valid = component_options(cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"{what} {name!r} does not take option(s) {unknown}; its options are "
                          f"{sorted(valid) or 'none'} (set them in [model.{what}_options])")
    for key, value in options.items():
        if (key.startswith(("num_", "count_")) or isinstance(valid[key], int)) and \
                not isinstance(valid[key], bool) and isinstance(value, float):
            raise ConfigError(f"{what} {name!r}: option {key} must be a whole number, got {value}")
    try:
        return cls.build(ctx, **options)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{what} {name!r} with options {options}: {e}") from None


def _options_for(cls, options):
    valid = component_options(cls)
    return {k: v for k, v in options.items() if k in valid}


def build_vae(model_config, event_shape, image_shape=None):
    """Build the :class:`~pyro_vae.vae.VAE` (or, when ``latent_dim`` is a list, the
    :class:`~pyro_vae.hierarchy.HierarchicalVAE`) a :class:`ModelConfig` describes.

    The guide is built first (the VampPrior shares it), then the prior, then the
    likelihood, whose decoder mirrors the encoder's hidden sizes.

    :param ModelConfig model_config: the ``[model]`` table.
    :param tuple event_shape: shape of one datapoint, e.g. ``(784,)``.
    :param tuple image_shape: ``(C, H, W)`` of one image, for convolutional networks.
    :raises ConfigError: for unknown component names or options (listing the valid
        ones), or bad sizes.
    """
    m = model_config
    check_discrete_latents(m)
    dims, hidden = m.latent_sizes(), m.layer_hidden()
    if m.inference not in INFERENCE:
        raise ConfigError(f"unknown model.inference {m.inference!r}; choose one of "
                          f"{sorted(INFERENCE)}")
    ctx = BuildContext(tuple(event_shape), dims[0], hidden[0], m.activation, m.network,
                       tuple(image_shape) if image_shape is not None else None)
    if m.hierarchical and m.uses_labels:
        raise ConfigError("conditional and semi-supervised models are flat VAEs: give "
                          "model.latent_dim as one number, or leave model.conditional and "
                          "model.semi_supervised false for a hierarchy")
    if m.hierarchical:
        return _build_hierarchical(m, ctx, dims, hidden)
    if m.inference != "bottom_up" or not isinstance(m.guide, str) or \
            m.likelihood_input != "z1" or m.conditional_options:
        raise ConfigError("model.inference, model.likelihood_input, model.conditional_options "
                          "and a list of guides apply to hierarchical VAEs: give "
                          "model.latent_dim as a list of layer sizes, e.g. [100, 50]")
    if m.uses_labels:
        return _build_with_labels(m, ctx, hidden[0])
    guide = build_component(GUIDES, m.guide, "guide", ctx, m.guide_options)
    prior = build_component(PRIORS, m.prior, "prior", dataclasses.replace(ctx, guide=guide),
                            m.prior_options)
    likelihood = build_component(LIKELIHOODS, m.likelihood, "likelihood",
                                 dataclasses.replace(ctx, hidden=hidden[0][::-1]),
                                 m.likelihood_options)
    vae = VAE(prior, guide, likelihood, event_shape=event_shape)
    if m.discriminator:
        vae.discriminator = build_discriminator(m, ctx)
    return vae



#: Bytes per parameter that training holds: the weight, its gradient and Adam's two moments
#: (float32), before activations.
TRAINING_BYTES_PER_PARAMETER = 16


def count_parameters(model_config, event_shape, image_shape=None):
    """The number of parameters of the model a :class:`ModelConfig` describes, counted on
    PyTorch's ``meta`` device (no memory is allocated, so an absurd size can be refused
    before it exhausts the machine).

    :returns: an int, or ``None`` if the model cannot be built on the meta device (some
        components need real tensors; a bad recipe is reported by the real build).
    """
    try:
        with torch.device("meta"):
            vae = build_vae(model_config, event_shape, image_shape)
    except Exception:  # noqa: BLE001 - see above
        return None
    return sum(p.numel() for p in vae.parameters())


def physical_memory():
    """The machine's physical memory in bytes (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_size(model_config, event_shape, image_shape=None, memory=None):
    """Refuse a model whose training could not fit in memory, before building it.

    :param int memory: bytes available (default: :func:`physical_memory`).
    :returns: the number of parameters (or ``None`` when it cannot be counted).
    :raises ConfigError: when the parameters alone, with their gradients and Adam's
        moments (:data:`TRAINING_BYTES_PER_PARAMETER` bytes each), exceed ``memory``; the
        message gives the sizes to lower.
    """
    n = count_parameters(model_config, event_shape, image_shape)
    memory = physical_memory() if memory is None else memory
    if n is not None and memory and n * TRAINING_BYTES_PER_PARAMETER > memory:
        m = model_config
        raise ConfigError(
            f"the model has {n:,} parameters: training needs at least "
            f"{n * TRAINING_BYTES_PER_PARAMETER / 2**30:,.1f} GiB for them, their gradients "
            f"and Adam's moments, more than this machine's {memory / 2**30:,.1f} GiB. Lower "
            f"model.latent_dim ({m.latent_dim}) or model.hidden ({m.hidden})")
    return n


def check_step_memory(config, event_shape, memory=None):
    """Refuse a training step whose activations could not fit in memory (a lower estimate:
    the particles x batch x (input + twice the hidden sizes + latents) float32 values,
    three times over for what autograd keeps), before the first step exhausts the machine.

    :param Config config: the recipe.
    :param int memory: bytes available (default: :func:`physical_memory`).
    :raises ConfigError: naming ``train.num_particles`` and ``train.batch_size``.
    """
    t, m = config.train, config.model
    width = event_size(event_shape) + 2 * sum(sum(h) for h in m.layer_hidden()) + \
        4 * sum(m.latent_sizes())
    need = 4 * 3 * t.num_particles * t.batch_size * width
    memory = physical_memory() if memory is None else memory
    if memory and need > memory:
        raise ConfigError(f"a training step of train.num_particles = {t.num_particles} x "
                          f"train.batch_size = {t.batch_size} needs at least {need / 2**30:,.1f} "
                          f"GiB for its activations, more than this machine's "
                          f"{memory / 2**30:,.1f} GiB; lower either")


def _build_with_labels(m, ctx, hidden):
    """The conditional (CVAE) and semi-supervised (M2) branch of :func:`build_vae`: the
    guide's network reads x and the one-hot label side by side, the decoder z and the
    label; M2 adds the classifier q(y|x)."""
    if m.conditional and m.semi_supervised:
        raise ConfigError("model.conditional and model.semi_supervised exclude each other: "
                          "M2 (semi_supervised) already conditions on its label site y")
    if not positive_int(m.num_classes) or m.num_classes < 2:
        raise ConfigError(f"model.num_classes must be at least 2 for a model of labels, got "
                          f"{m.num_classes!r} (0 is resolved from the data when a run starts)")
    if m.network != "mlp":
        raise ConfigError("conditional and semi-supervised models use MLP networks (the label "
                          "is read beside the flattened image); set model.network = 'mlp'")
    if m.prior == "vamp":
        raise ConfigError("the VampPrior mixes q(z|u) over pseudo-inputs u, which has no label "
                          "here; choose standard_normal, conditional_normal or another prior")
    k = int(m.num_classes)
    guide_ctx = dataclasses.replace(ctx, event_shape=(event_size(ctx.event_shape) + k,))
    guide = build_component(GUIDES, m.guide, "guide", guide_ctx, m.guide_options)
    prior = build_component(PRIORS, m.prior, "prior",
                            dataclasses.replace(ctx, guide=guide, context_dim=k), m.prior_options)
    likelihood = build_component(LIKELIHOODS, m.likelihood, "likelihood",
                                 dataclasses.replace(ctx, hidden=hidden[::-1],
                                                     latent_dim=ctx.latent_dim + k),
                                 m.likelihood_options)
    classifier = None
    if m.semi_supervised:
        classifier = MLP(event_size(ctx.event_shape), list(m.classifier_hidden or hidden), k,
                         ctx.activation)
    return VAE(prior, guide, likelihood, event_shape=ctx.event_shape, context_dim=k,
               num_classes=k, classifier=classifier)


def _build_hierarchical(m, ctx, dims, hidden):
    """The hierarchical branch of :func:`build_vae`: one flat guide per layer (the first
    on x with ``model.network``; the others on z_{l-1}, on the features of the layer below
    for ladder inference, or on x and z_{l+1} joined for top-down inference), the top prior,
    L - 1 Gaussian conditionals and the likelihood on z1 (or on every layer joined)."""
    names = m.layer_guides()
    classes = [_lookup(GUIDES, name, "guide") for name in names]
    taken = set().union(*(component_options(cls) for cls in classes))
    unknown = sorted(set(m.guide_options) - taken)
    if unknown:
        raise ConfigError(f"no layer's guide takes option(s) {unknown}; the guides {names} take "
                          f"{sorted(taken) or 'none'} (set them in [model.guide_options])")
    if m.likelihood_input not in ("z1", "all"):
        raise ConfigError(f"unknown model.likelihood_input {m.likelihood_input!r}; choose 'z1' "
                          "or 'all'")
    joined = m.inference == "top_down" or m.likelihood_input == "all"
    if joined and m.network not in ("mlp", "gated"):
        raise ConfigError(f"model.network = {m.network!r}: top-down inference and a likelihood "
                          "reading every layer join flattened inputs; use 'mlp' or 'gated'")
    inner = m.network if m.network == "gated" else "mlp"  # the layers that do not read x
    if joined and not all(hidden):
        raise ConfigError(f"model.hidden = {m.hidden!r}: top-down inference and a likelihood "
                          "reading every layer take the width of each join from the first "
                          "hidden size of its layer; give every layer at least one")

    def join(sizes, width):
        return JoinedInputs(sizes, width, inner, m.activation)

    layers, joins = [], []
    for i, (name, cls) in enumerate(zip(names, classes)):
        if m.inference == "top_down" and i < len(dims) - 1:
            joins.append(join((event_size(ctx.event_shape), dims[i + 1]), hidden[i][0]))
            layer_ctx = BuildContext((joins[-1].out_features,), dims[i], hidden[i],
                                     m.activation, inner)
        elif m.inference == "top_down" or i == 0:
            layer_ctx = dataclasses.replace(ctx, latent_dim=dims[i], hidden=hidden[i])
        else:
            inputs = (layers[-1].feature_size,) if m.inference == "ladder" else (dims[i - 1],)
            layer_ctx = BuildContext(inputs, dims[i], hidden[i], m.activation, inner)
        layers.append(build_component(GUIDES, name, "guide", layer_ctx,
                                      _options_for(cls, m.guide_options)))
    try:
        guide = (TopDownGuide(layers, joins, ctx.event_shape) if m.inference == "top_down"
                 else INFERENCE[m.inference](layers))
    except ValueError as e:
        raise ConfigError(f"model.inference = {m.inference!r}: {e}") from None
    prior = build_component(PRIORS, m.prior, "prior",
                            dataclasses.replace(ctx, latent_dim=dims[-1], hidden=hidden[-1],
                                                guide=TopPosterior(guide)),
                            m.prior_options)
    likelihood_join = join(dims, hidden[0][0]) if m.likelihood_input == "all" else None
    likelihood = build_component(
        LIKELIHOODS, m.likelihood, "likelihood",
        dataclasses.replace(ctx, hidden=hidden[0][::-1], **(
            {"latent_dim": likelihood_join.out_features, "network": inner}
            if likelihood_join is not None else {})),
        m.likelihood_options)
    unknown = sorted(set(m.conditional_options) - {"log_var_range"})
    if unknown:
        raise ConfigError(f"the prior conditionals do not take option(s) {unknown}; their only "
                          "option is log_var_range (in [model.conditional_options])")
    try:
        conditionals = [GaussianConditional(dims[i + 1], dims[i], hidden[i + 1][::-1],
                                            m.activation, inner, **m.conditional_options)
                        for i in range(len(dims) - 1)]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.conditional_options: {e}") from None
    return HierarchicalVAE(prior, guide, likelihood, conditionals, event_shape=ctx.event_shape,
                           likelihood_join=likelihood_join)
