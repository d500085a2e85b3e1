"""Neural networks used by guides (encoders) and likelihoods (decoders).

The networks are plain :class:`torch.nn.Module` objects; they know nothing of Pyro.
They act on the last dimension and keep every leading dimension, so an outer particle
dimension passes through unchanged.
"""

from torch import nn

from .errors import ConfigError

#: Activation functions by name, for recipes.
ACTIVATIONS = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
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


__all__ = ["ACTIVATIONS", "MLP", "get_activation", "flatten_event", "unflatten_event",
           "event_size"]
