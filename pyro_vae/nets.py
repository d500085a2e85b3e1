"""Neural networks used by guides (encoders) and likelihoods (decoders).

The networks are plain :class:`torch.nn.Module` objects; they know nothing of Pyro.
They act on the last dimension and keep every leading dimension, so an outer particle
dimension passes through unchanged.
"""

import functools

import torch
from torch import nn

from .errors import ConfigError

#: Activation functions by name, for recipes.
ACTIVATIONS = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": functools.partial(nn.LeakyReLU, 0.2),  # slope 0.2, as GAN discriminators
}


def get_activation(name):
    """Return the activation class called ``name``.

    :param str name: one of the keys of :data:`ACTIVATIONS`.
    :raises ConfigError: for an unknown name; the message lists the valid ones.
    """
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


class MLP(nn.Module):
    """A multilayer perceptron ``in_features -> hidden... -> out_features``.

    The activation follows every hidden layer, not the output layer.

    :param int in_features: size of the input's last dimension.
    :param hidden: sizes of the hidden layers (may be empty: then a single linear map).
    :type hidden: sequence of int
    :param int out_features: size of the output's last dimension.
    :param str activation: a key of :data:`ACTIVATIONS`.
    :raises ConfigError: for non-positive sizes or an unknown activation.

    Shapes: input ``(..., in_features)`` -> output ``(..., out_features)``.
    """

    def __init__(self, in_features, hidden, out_features, activation="softplus"):
        super().__init__()
        sizes = [int(in_features), *[int(h) for h in hidden], int(out_features)]
        if any(s < 1 for s in sizes):
            raise ConfigError(f"layer sizes must be positive integers, got {sizes}")
        act = get_activation(activation)
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(act())
        self.net = nn.Sequential(*layers)
        self.in_features = sizes[0]
        self.out_features = sizes[-1]

    def forward(self, x):
        """Map ``(..., in_features)`` to ``(..., out_features)``."""
        return self.net(x)

    def forward_with_features(self, x):
        """Return ``(h, out)``: the input of the last linear layer (the last hidden
        activations, or ``x`` itself without hidden layers) and the output."""
        layers = list(self.net)
        for layer in layers[:-1]:
            x = layer(x)
        return x, layers[-1](x)

    @property
    def feature_size(self):
        """Size of ``h`` returned by :meth:`forward_with_features`."""
        return self.net[-1].in_features

    @property
    def output_layer(self):
        """The last :class:`~torch.nn.Linear` layer (for initializing output heads)."""
        return self.net[-1]


def flatten_event(x, event_shape):
    """Flatten the trailing ``event_shape`` dims of ``x`` into one.

    :param torch.Tensor x: shape ``(..., *event_shape)``.
    :param tuple event_shape: the event shape of one datapoint.
    :returns: a view of shape ``(..., prod(event_shape))``.
    """
    if len(event_shape) == 1:
        return x
    return x.reshape(x.shape[: x.dim() - len(event_shape)] + (-1,))


def unflatten_event(x, event_shape):
    """Inverse of :func:`flatten_event`: ``(..., prod(event_shape))`` -> ``(..., *event_shape)``."""
    if len(event_shape) == 1:
        return x
    return x.reshape(x.shape[:-1] + tuple(event_shape))


def event_size(event_shape):
    """Number of scalars in one datapoint of shape ``event_shape``."""
    n = 1
    for s in event_shape:
        n *= int(s)
    return n


__all__ = ["ACTIVATIONS", "MLP", "GatedDense", "GatedMLP", "JoinedInputs", "get_activation",
           "flatten_event", "unflatten_event", "event_size"]


def _he_init(module):
    """He-normal weights and zero biases for every convolution in ``module`` (He et al.
    2015, arXiv:1502.01852). PyTorch's default shrinks the signal at each layer: with
    softplus activations the encoder's output then barely depends on the image at the
    start, and on digits every latent unit collapsed."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return module


def _downsamplings(size):
    """Stride-2 convolutions for an image side: 2 for 28 (28 -> 14 -> 7), 1 for 8 (8 -> 4)."""
    if size % 4 == 0 and size >= 16:
        return 2
    return 1 if size % 2 == 0 else 0


class ConvEncoder(nn.Module):
    """A convolutional encoder for images: 3x3 convolution, then stride-2 4x4 convolutions
    (two for 28x28, one for 8x8), then an MLP ``flattened -> hidden... -> out_features``.

    Same interface as :class:`MLP` (``forward``, ``forward_with_features``,
    ``feature_size``), on flattened images: input ``(..., C*H*W)``.

    :param tuple image_shape: ``(C, H, W)``.
    :param hidden: hidden sizes of the MLP after the convolutions.
    :param int out_features: output size.
    :param int channels: channels of the first convolution (doubled at each stride).
    """

    def __init__(self, image_shape, hidden, out_features, activation="softplus", channels=32):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        act = get_activation(activation)
        layers, ch = [nn.Conv2d(c, channels, 3, padding=1), act()], channels
        for _ in range(_downsamplings(min(h, w))):
            layers += [nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1), act()]
            ch, h, w = 2 * ch, h // 2, w // 2
        self.image_shape = (c, int(image_shape[1]), int(image_shape[2]))
        self.conv = _he_init(nn.Sequential(*layers, nn.Flatten()))
        self.head = MLP(ch * h * w, hidden, out_features, activation)
        self.head_act = act()

    @property
    def feature_size(self):
        """Size of ``h`` returned by :meth:`forward_with_features`."""
        return self.head.feature_size

    @property
    def output_layer(self):
        """The last :class:`~torch.nn.Linear` layer (for initializing output heads)."""
        return self.head.output_layer

    def _trunk(self, x):
        lead = x.shape[:-1]
        return self.head_act(self.conv(x.reshape(-1, *self.image_shape))), lead

    def forward_with_features(self, x):
        """Return ``(h, out)`` as :meth:`MLP.forward_with_features` does."""
        f, lead = self._trunk(x)
        h, out = self.head.forward_with_features(f)
        return h.reshape(lead + h.shape[-1:]), out.reshape(lead + out.shape[-1:])

    def forward(self, x):
        """Map ``(..., C*H*W)`` to ``(..., out_features)``."""
        return self.forward_with_features(x)[1]


class ConvDecoder(nn.Module):
    """A convolutional decoder mirroring :class:`ConvEncoder`: an MLP
    ``latent -> hidden... -> channels x (H/s) x (W/s)``, transposed stride-2 convolutions
    back to ``H x W``, and a 3x3 convolution to ``C * params_per_value`` maps.

    Output ``(..., C*H*W*params_per_value)`` laid out as ``(C, H, W, params_per_value)``,
    the layout the likelihoods read.
    """

    def __init__(self, latent_dim, hidden, image_shape, params_per_value=1,
                 activation="softplus", channels=32):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        act = get_activation(activation)
        n = _downsamplings(min(h, w))
        ch = channels * 2 ** n
        self.start = (ch, h // 2 ** n, w // 2 ** n)
        self.head = nn.Sequential(MLP(latent_dim, hidden, ch * self.start[1] * self.start[2],
                                      activation), act())
        layers = []
        for _ in range(n):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1), act()]
            ch //= 2
        layers.append(nn.Conv2d(ch, c * params_per_value, 3, padding=1))
        self.deconv = _he_init(nn.Sequential(*layers))
        self.image_shape, self.params_per_value = (c, h, w), int(params_per_value)

    def forward(self, z):
        """Map ``(..., latent_dim)`` to ``(..., C*H*W*params_per_value)``."""
        lead = z.shape[:-1]
        out = self.deconv(self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start))
        c, h, w = self.image_shape
        out = out.reshape(-1, c, self.params_per_value, h, w).permute(0, 1, 3, 4, 2)
        return out.reshape(lead + (-1,))


class GatedDense(nn.Module):
    """A gated dense layer: ``h = (x W + b) * sigmoid(x V + c)`` (Dauphin et al. 2017,
    Language Modeling with Gated Convolutional Networks, arXiv:1612.08083; the dense layers
    of the VampPrior paper's networks, Tomczak & Welling 2018, arXiv:1705.07120). Both
    weight matrices are He-initialized (He et al. 2015, arXiv:1502.01852), biases zero.

    Shapes: ``(..., in_features)`` -> ``(..., out_features)``.
    """

    def __init__(self, in_features, out_features):
        super().__init__()
        self.value = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(in_features, out_features)
        for layer in (self.value, self.gate):
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.in_features, self.out_features = int(in_features), int(out_features)

    def forward(self, x):
        """``(x W + b) * sigmoid(x V + c)``."""
        return self.value(x) * torch.sigmoid(self.gate(x))


class GatedMLP(MLP):
    """An :class:`MLP` whose hidden layers are :class:`GatedDense` (the gate is the
    nonlinearity, so no other activation follows them); the output layer is linear and
    He-initialized. Same interface and shapes as :class:`MLP`.

    :raises ConfigError: for non-positive sizes.
    """

    def __init__(self, in_features, hidden, out_features, activation=None):
        nn.Module.__init__(self)
        sizes = [int(in_features), *[int(h) for h in hidden], int(out_features)]
        if any(s < 1 for s in sizes):
            raise ConfigError(f"layer sizes must be positive integers, got {sizes}")
        layers = [GatedDense(a, b) for a, b in zip(sizes[:-2], sizes[1:-1])]
        out = nn.Linear(sizes[-2], sizes[-1])
        nn.init.kaiming_normal_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)
        self.in_features, self.out_features = sizes[0], sizes[-1]


class JoinedInputs(nn.Module):
    """Several inputs read side by side: each through its own layer to ``width`` features
    (a :class:`GatedDense`, or a linear layer and the activation), then concatenated. The
    two-level HVAE of Tomczak & Welling 2018 (arXiv:1705.07120, their ``HVAE_2level``)
    reads ``(x, z_2)`` this way in q(z_1 | x, z_2) and ``(z_1, z_2)`` in p(x | z_1, z_2).

    :param in_features: the size of each input's last dimension.
    :param int width: features per input.
    :param str network: ``"gated"`` or ``"mlp"``.
    :param str activation: for ``"mlp"`` (a key of :data:`ACTIVATIONS`).
    :raises ConfigError: for no inputs, non-positive sizes, another network or an unknown
        activation.

    Shapes: inputs ``(..., in_features[i])`` whose leading dims broadcast (a particle dim on
    one of them) -> ``(..., len(in_features) * width)``.
    """

    def __init__(self, in_features, width, network="gated", activation="softplus"):
        super().__init__()
        sizes = [int(d) for d in in_features]
        if not sizes or any(s < 1 for s in sizes) or int(width) < 1:
            raise ConfigError(f"joined inputs need positive sizes, got inputs {sizes} and "
                              f"width {width}")
        if network not in ("gated", "mlp"):
            raise ConfigError(f"inputs read side by side need model.network 'gated' or 'mlp', "
                              f"got {network!r}")
        if network == "gated":
            branches = [GatedDense(d, width) for d in sizes]
        else:
            act = get_activation(activation)
            branches = [nn.Sequential(nn.Linear(d, width), act()) for d in sizes]
        self.branches = nn.ModuleList(branches)
        self.in_features = tuple(sizes)
        self.out_features = len(sizes) * int(width)

    def forward(self, *inputs):
        """Concatenate each input's features, broadcasting their leading dims.

        :raises ValueError: for the wrong number of inputs.
        """
        if len(inputs) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} inputs, got {len(inputs)}")
        features = [branch(v) for branch, v in zip(self.branches, inputs)]
        batch = torch.broadcast_shapes(*(h.shape[:-1] for h in features))
        return torch.cat([h.expand(*batch, h.shape[-1]) for h in features], dim=-1)


#: Encoder/decoder kinds by name, for recipes (``model.network``).
NETWORKS = ("mlp", "gated", "conv")


def make_encoder(network, event_shape, image_shape, hidden, out_features, activation):
    """An :class:`MLP` or :class:`ConvEncoder` from flattened datapoints to ``out_features``.

    :raises ConfigError: for an unknown kind, or ``conv`` without an image shape whose size
        matches the event.
    """
    if network in ("mlp", "gated"):
        cls = MLP if network == "mlp" else GatedMLP
        return cls(event_size(event_shape), hidden, out_features, activation)
    if network == "conv":
        return ConvEncoder(_checked_image_shape(image_shape, event_shape), hidden, out_features,
                           activation)
    raise ConfigError(f"unknown network {network!r}; choose one of {list(NETWORKS)}")


def make_decoder(network, latent_dim, hidden, event_shape, image_shape, params_per_value,
                 activation):
    """An :class:`MLP` or :class:`ConvDecoder` from latents to ``params_per_value`` numbers per
    scalar of a datapoint, laid out ``(*event, params_per_value)``.

    :raises ConfigError: as :func:`make_encoder`.
    """
    if network in ("mlp", "gated"):
        cls = MLP if network == "mlp" else GatedMLP
        return cls(latent_dim, hidden, params_per_value * event_size(event_shape), activation)
    if network == "conv":
        return ConvDecoder(latent_dim, hidden, _checked_image_shape(image_shape, event_shape),
                           params_per_value, activation)
    raise ConfigError(f"unknown network {network!r}; choose one of {list(NETWORKS)}")


def _checked_image_shape(image_shape, event_shape):
    if image_shape is None or len(image_shape) != 3 or \
            event_size(image_shape) != event_size(event_shape):
        raise ConfigError(f"a convolutional network needs an image shape (C, H, W) with "
                          f"{event_size(event_shape)} values, got {image_shape}; use "
                          "model.network = 'mlp' for data that are not images")
    return tuple(int(s) for s in image_shape)
