"""The second player of an adversarial objective: the discriminator (built from the recipe,
:func:`build_discriminator`), its optimizer, its step after each step of the VAE, its
statistics per epoch, and its state in the checkpoint.

The discriminator is a module of the model (``vae.discriminator``, saved with its weights);
the :class:`~pyro_vae.trainer.Trainer` leaves its parameters out of the VAE's optimizer and,
when the objective has a ``discriminator_loss`` (see :mod:`pyro_vae.infer.adversarial`),
makes an :class:`Adversary` that updates them with Adam (betas (0.5, 0.999), as DCGAN,
Radford et al. 2015, arXiv:1511.06434) on the same batch.
"""

import torch

from .errors import ConfigError
from .model_config import positive_int
from .nets import MLP, event_size


class Adversary:
    """The discriminator's optimizer and step, and the epoch's statistics of both players.

    :param objective: an adversarial objective (with ``discriminator``,
        ``discriminator_lr``, ``discriminator_loss`` and ``last``).
    """

    def __init__(self, objective):
        self.objective = objective
        self.parameters = [p for p in objective.discriminator.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.parameters, lr=objective.discriminator_lr,
                                          betas=(0.5, 0.999))
        self.sums, self.count = {}, 0

    @classmethod
    def of(cls, objective):
        """An :class:`Adversary` for an adversarial objective, else ``None``."""
        return cls(objective) if hasattr(objective, "discriminator_loss") else None

    def step(self, model, guide, x):
        """One Adam step of the discriminator on the batch ``x``; adds both players' last
        statistics to the epoch's sums."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, stats = self.objective.discriminator_loss(model, guide, x)
        loss.backward()
        self.optimizer.step()
        for key, value in {**self.objective.last, **stats}.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.count += 1

    def epoch_metrics(self):
        """The epoch's mean statistics (generator's adversarial term, feature matching,
        discriminator loss and accuracy), then the sums start again."""
        means = {key: value / self.count for key, value in self.sums.items()} if self.count else {}
        self.sums, self.count = {}, 0
        return means

    def state_dict(self):
        """The optimizer's state and the epoch's partial sums (tensors and plain data)."""
        return {"optimizer": self.optimizer.state_dict(), "sums": dict(self.sums),
                "count": self.count}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.sums, self.count = dict(state["sums"]), int(state["count"])


#: What each kind of discriminator reads (``model.discriminator``).
DISCRIMINATORS = {"latent": "z", "image": "x"}


def build_discriminator(m, ctx):
    """The MLP discriminator ``model.discriminator`` names, with ``discriminator_hidden``
    and one output logit, reading z (``"latent"``) or the flattened x (``"image"``).

    :raises ConfigError: for an unknown kind or bad hidden sizes.
    """
    if m.discriminator not in DISCRIMINATORS:
        raise ConfigError(f"unknown model.discriminator {m.discriminator!r}; choose one of "
                          f"{sorted(DISCRIMINATORS)} (or leave it empty)")
    hidden = m.discriminator_hidden
    if not hidden or not all(positive_int(h) for h in hidden):
        raise ConfigError(f"model.discriminator_hidden must be a non-empty list of positive "
                          f"integers, got {hidden!r}")
    inputs = ctx.latent_dim if m.discriminator == "latent" else event_size(ctx.event_shape)
    return MLP(inputs, list(hidden), 1, "leaky_relu")
