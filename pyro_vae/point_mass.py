"""The point-mass guide: an amortized MAP autoencoder written as a Pyro guide.

q(z|x) = delta(z - f(x)) turns the ELBO into log p(x|f(x)) + log p(f(x)); with masking
noise on the encoder's input, a denoising autoencoder (Vincent et al. 2008). A point mass
has no density, so its log-likelihood is estimated through an explicit proposal
(:class:`~pyro_vae.distributions.GaussianProposal`).
"""

import pyro.distributions as dist
import torch
import torch.nn.functional

from .guides import DiagonalNormalGuide
from .nets import flatten_event


class DeltaGuide(DiagonalNormalGuide):
    """A point mass :math:`q(z|x) = \\delta(z - f(x))`: with it the ELBO is
    :math:`\\log p(x | f(x)) + \\log p(f(x))`, so SVI trains an amortized MAP autoencoder
    (a deterministic autoencoder whose code is regularized by the prior's log density),
    the baseline a VAE is contrasted with. With ``noise > 0`` the encoder sees a corrupted
    input while training, a denoising autoencoder (Vincent et al. 2008, "Extracting and
    Composing Robust Features with Denoising Autoencoders", ICML): each input value is set
    to 0 with probability ``noise`` (masking noise); the likelihood still scores the clean
    ``x``.

    The guide is a point mass in training and in eval mode alike. A point mass has no
    density away from its point, so it cannot serve as the proposal of the
    importance-weighted estimate of log p(x): evaluation asks explicitly for a proposal,
    :class:`~pyro_vae.distributions.GaussianProposal` (``vae.proposal()``), which samples
    :math:`\\mathcal{N}(f(x), \\sigma_e^2 I)` at the latent site with ``eval_scale``
    sigma_e. Any proposal with a density gives a valid lower bound on the autoencoder's
    log p(x) = log E_p(z) p(x|z), tightening with k, so AE and VAE runs are compared on the
    same footing (the ELBO reported with it is this Gaussian's, a true ELBO).

    :param float noise: masking probability in [0, 1) applied in training mode only.
    :param float eval_scale: sigma_e, the standard deviation of the Gaussian proposal with
        which runs of this guide are evaluated (not used by the guide itself).
    :raises ValueError: for ``noise`` outside [0, 1) or ``eval_scale <= 0``.

    Shapes: ``x`` ``(B, *event_shape)`` -> ``Delta`` with batch ``(B,)``, event ``(D,)``.
    """

    invertible = False
    precision_weighting = False
    #: q is a point mass: its log density is 0 at its point and undefined elsewhere.
    point_mass = True

    def __init__(self, event_shape, latent_dim, hidden=(400,), activation="softplus",
                 noise=0.0, eval_scale=0.1, **networks):
        if not 0.0 <= float(noise) < 1.0:
            raise ValueError(f"noise is a masking probability in [0, 1), got {noise}")
        if not float(eval_scale) > 0:
            raise ValueError(f"eval_scale must be positive, got {eval_scale}")
        self.noise = float(noise)
        self.eval_scale = float(eval_scale)
        super().__init__(event_shape, latent_dim, hidden, activation, **networks)

    @classmethod
    def build(cls, ctx, noise=0.0, eval_scale=0.1):
        """Build from a recipe (options ``noise``: masking probability of the denoising
        variant, 0 for a plain autoencoder; ``eval_scale``: see the class)."""
        return cls(ctx.event_shape, ctx.latent_dim, ctx.hidden, ctx.activation, noise=noise,
                   eval_scale=eval_scale, **ctx.networks)

    def num_outputs(self):
        """Size of the encoder's output: the point, D values."""
        return self.latent_dim

    def corrupt(self, x):
        """``x`` with each value set to 0 with probability :attr:`noise` (in training mode;
        unchanged in eval mode or with ``noise = 0``)."""
        if not self.training or self.noise == 0.0:
            return x
        keep = torch.rand_like(x) >= self.noise
        return x * keep

    def base(self, params, prior=None):
        """The point mass at the encoder's output ``(..., D)``, in every mode.

        :raises ValueError: with a ``prior`` to combine with (ladder inference)."""
        if prior is not None:
            raise ValueError("a point-mass guide cannot be combined with a prior conditional "
                             "(ladder inference); use inference = 'bottom_up'")
        return dist.Delta(params, event_dim=1)

    def encode(self, x):
        """Run the encoder on the (corrupted, in training) input: ``(h, point)``."""
        return super().encode(self.corrupt(x))

    def forward(self, x):
        """Return the point mass q(z|x) for a batch ``x`` of shape ``(B, *event_shape)``."""
        return self.base(self.encoder(flatten_event(self.corrupt(x), self.event_shape)))
