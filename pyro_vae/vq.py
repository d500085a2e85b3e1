"""The vector-quantized VAE (van den Oord et al. 2017, Neural Discrete Representation
Learning, arXiv:1711.00937) as a Pyro model/guide pair.

The encoder maps x to M vectors ``z_e`` of D values; each is replaced by its nearest entry
of a learned codebook of K vectors (``e_1..e_K``), so the latent is a code of M indices.
The latent site ``"z"`` holds the M chosen codebook vectors side by side (event ``(M * D,)``):

- the guide is a point mass on the code, :class:`QuantizedCode`, whose sample is the
  straight-through value ``z_e + sg(e - z_e)`` (equal to the codebook vectors, with the
  decoder's gradient passed on to the encoder) and whose log-density at its point is 0;
- the model's prior is a distribution over codes, :class:`AutoregressiveCode`: uniform
  (the paper's training) or a small causal Transformer over the M positions (the paper fits a
  PixelCNN over the code grid after training; ours is fitted to the codes of the training
  images as the run assigns them, the codes detached, see :class:`CodePrior`);
- the likelihood's decoder reads the M vectors.

Because the code is discrete, the point-mass guide has probability 1 at its code, and
``log p(x) >= log p(x | z_q(x)) + log p(z_q(x))``: the importance-weighted estimate with this
guide (any k) is that bound, valid on the same test protocol as every other model's.
:class:`~pyro_vae.infer.discrete_objectives.VQObjective` adds the commitment and codebook
losses of the paper to the negative bound.
"""

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

from .nets import flatten_event, make_encoder


def code_shape(latent_dim, embedding_dim):
    """``(M, D)`` for ``latent_dim = M * D``.

    :raises ValueError: unless ``embedding_dim`` divides ``latent_dim``.
    """
    d, total = int(embedding_dim), int(latent_dim)
    if d < 1 or total % d or total < d:
        raise ValueError(f"a vector-quantized code needs latent_dim = positions x embedding_dim; "
                         f"got latent_dim {total} and embedding_dim {d}")
    return total // d, d


def nearest(vectors, codebook):
    """The index of the codebook entry nearest to each vector (squared Euclidean distance,
    computed as ``|v|^2 - 2 v.e + |e|^2`` without a ``(..., K, D)`` difference tensor).

    :param torch.Tensor vectors: ``(..., D)``.
    :param torch.Tensor codebook: ``(K, D)``.
    :returns: indices ``(...)``, long.
    """
    with torch.no_grad():
        distances = (vectors.pow(2).sum(-1, keepdim=True) - 2 * vectors @ codebook.T
                     + codebook.pow(2).sum(-1))
        return distances.argmin(-1)


class QuantizedCode(dist.Delta):
    """The guide's point mass on a quantized code (a :class:`~pyro.distributions.Delta` of
    event dim 1, log-density 0 at its point) that keeps what the VQ-VAE losses need.

    :param torch.Tensor encoded: ``z_e``, ``(*batch, M, D)``.
    :param torch.Tensor codebook: ``(K, D)``.
    :param indices: ``(*batch, M)`` the entries chosen, if known (default: the nearest).
    :ivar indices: ``(*batch, M)`` nearest codebook entries.
    :ivar quantized: ``(*batch, M, D)`` their vectors.
    """

    #: A point mass on a discrete variable: probability 1 at its point, so it is a valid
    #: importance-sampling proposal (see :func:`pyro_vae.infer.traces.check_densities`).
    on_discrete_code = True

    def __init__(self, encoded, codebook, indices=None, validate_args=None):
        self.encoded, self.codebook = encoded, codebook
        self.indices = nearest(encoded, codebook) if indices is None else indices
        self.quantized = codebook[self.indices]
        straight_through = encoded + (self.quantized - encoded).detach()
        super().__init__(straight_through.flatten(-2), event_dim=1, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        """The same code for a batch of shape ``batch_shape`` (e.g. particles)."""
        shape = torch.Size(batch_shape) + self.encoded.shape[-2:]
        return QuantizedCode(self.encoded.expand(shape), self.codebook,
                             self.indices.expand(shape[:-1]))

    def quantization_losses(self):
        """Per datapoint (``batch`` shape), summed over the M positions: the commitment loss
        ``||z_e - sg(e)||^2`` and the codebook loss ``||sg(z_e) - e||^2`` (van den Oord et al.
        2017, eq. 3)."""
        commitment = (self.encoded - self.quantized.detach()).pow(2).sum((-1, -2))
        codebook = (self.encoded.detach() - self.quantized).pow(2).sum((-1, -2))
        return commitment, codebook


class VectorQuantizedGuide(nn.Module):
    """The VQ-VAE encoder and codebook: q(z|x) a point mass on the nearest codebook vectors
    of the encoder's M outputs (:class:`QuantizedCode`).

    :param tuple event_shape: shape of one datapoint.
    :param int latent_dim: ``M * D``.
    :param int num_codes: K, codebook entries.
    :param int embedding_dim: D.
    :param hidden, activation, network, image_shape: the encoder (see
        :func:`~pyro_vae.nets.make_encoder`).
    :raises ValueError: for sizes that do not fit (see :func:`code_shape`), or K < 2.

    The codebook starts uniform in ``[-1/K, 1/K]`` as in the paper's reference code.
    """

    #: The latent is a discrete code: the point mass has probability 1 there, so the guide
    #: itself is a valid importance-sampling proposal (no Gaussian stand-in).
    point_mass = False
    #: A vector-quantized code (the prior must be the code prior).
    vector_quantized = True

    def __init__(self, event_shape, latent_dim, num_codes=64, embedding_dim=16, hidden=(400,),
                 activation="softplus", network="mlp", image_shape=None):
        super().__init__()
        if int(num_codes) < 2:
            raise ValueError(f"the codebook needs at least 2 entries, got num_codes = {num_codes}")
        self.num_positions, self.embedding_dim = code_shape(latent_dim, embedding_dim)
        self.num_codes = int(num_codes)
        self.event_shape = tuple(event_shape)
        self.latent_dim = int(latent_dim)
        self.encoder = make_encoder(network, self.event_shape, image_shape, hidden,
                                    self.latent_dim, activation)
        bound = 1.0 / self.num_codes
        self.codebook = nn.Parameter(torch.empty(self.num_codes, self.embedding_dim)
                                     .uniform_(-bound, bound))

    @classmethod
    def build(cls, ctx, num_codes=64, embedding_dim=16):
        """Build from a recipe's context; options ``num_codes`` (K), ``embedding_dim`` (D)."""
        return cls(ctx.event_shape, ctx.latent_dim, num_codes, embedding_dim, ctx.hidden,
                   ctx.activation, **ctx.networks)

    def forward(self, x):
        """q(z|x), a :class:`QuantizedCode` with batch ``x.shape[:-len(event_shape)]``."""
        encoded = self.encoder(flatten_event(x, self.event_shape))
        return QuantizedCode(encoded.reshape(encoded.shape[:-1] + (self.num_positions,
                                                                   self.embedding_dim)),
                             self.codebook)

    @torch.no_grad()
    def code_usage(self, x):
        """How the codebook is used on images ``x``: the counts of each entry ``(K,)``, the
        perplexity ``exp(entropy)`` of the usage frequencies (K when all are used evenly, 1
        when one is) and the number of dead codes (never used)."""
        counts = torch.bincount(self(x).indices.flatten(), minlength=self.num_codes).double()
        freq = counts / counts.sum()
        entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum()
        return {"counts": counts.tolist(), "perplexity": float(entropy.exp()),
                "dead_codes": int((counts == 0).sum()), "num_codes": self.num_codes}


class CodePrior(nn.Module):
    """The prior over the M code indices: uniform, or autoregressive over the positions in
    order, each position's K logits given the earlier ones by a small causal Transformer
    (Vaswani et al. 2017, arXiv:1706.03762; the VQ-VAE paper uses a PixelCNN, van den Oord et
    al. 2017, arXiv:1711.00937).

    It evaluates codes given as the codebook's vectors (the latent site's values) by looking
    up their indices, so it holds the guide (whose codebook it shares, as the VampPrior does).
    In training the lookup has no gradient: the prior's parameters learn from the codes the
    guide assigns, the encoder and codebook from the likelihood and the VQ losses.

    :param guide: the :class:`VectorQuantizedGuide`.
    :param bool learned: the Transformer (True) or the uniform prior (False).
    :param int width: the Transformer's model width.
    :param int layers: its layers.
    :param int heads: its attention heads.
    """

    #: A vector-quantized code (the guide must be the quantizing one).
    vector_quantized = True

    def __init__(self, guide, learned=True, width=64, layers=2, heads=4):
        super().__init__()
        self.guide = guide
        self.num_positions, self.num_codes = guide.num_positions, guide.num_codes
        self.latent_dim = guide.latent_dim
        self.learned = bool(learned)
        if self.learned:
            self.embed = nn.Embedding(self.num_codes + 1, width)  # the last: start token
            self.position = nn.Parameter(torch.zeros(self.num_positions, width))
            layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0,
                                               batch_first=True)
            self.net = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.out = nn.Linear(width, self.num_codes)
            self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(
                self.num_positions), persistent=False)

    @classmethod
    def build(cls, ctx, learned=True, width=64, layers=2, heads=4):
        """Build from a recipe's context (the guide must be ``vector_quantized``).

        :raises ValueError: for another guide.
        """
        if not getattr(ctx.guide, "vector_quantized", False):
            raise ValueError("the code prior needs the vector-quantized guide (guide = 'vq')")
        return cls(ctx.guide, learned, width, layers, heads)

    def logits(self, indices):
        """Log-probabilities ``(n, M, K)`` of each position given the earlier indices
        ``(n, M)`` (uniform: ``-log K``)."""
        n = indices.shape[0]
        if not self.learned:
            return torch.full((n, self.num_positions, self.num_codes), -math.log(self.num_codes),
                              device=indices.device)
        start = torch.full((n, 1), self.num_codes, dtype=torch.long, device=indices.device)
        h = self.embed(torch.cat([start, indices[:, :-1]], 1)) + self.position
        h = self.net(h, mask=self.causal, is_causal=True)
        return self.out(h).log_softmax(-1)

    def forward(self, batch_size):
        """p(z) with batch ``(batch_size,)``, event ``(M * D,)``: :class:`AutoregressiveCode`."""
        return AutoregressiveCode(self, torch.Size([int(batch_size)]))


class AutoregressiveCode(dist.TorchDistribution):
    """A :class:`CodePrior`'s distribution over codes, as the codebook vectors side by side
    (event ``(M * D,)``): ``log_prob`` in nats, summed over the positions; ``sample`` draws the
    positions in order (M passes of the Transformer)."""

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, prior, batch_shape, validate_args=False):
        self.prior = prior
        super().__init__(torch.Size(batch_shape), torch.Size([prior.latent_dim]),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        """The same prior with batch shape ``batch_shape``."""
        return AutoregressiveCode(self.prior, batch_shape)

    def _indices(self, value):
        guide = self.prior.guide
        return nearest(value.reshape(-1, guide.num_positions, guide.embedding_dim),
                       guide.codebook)

    def log_prob(self, value):
        """``sum_m log p(index_m | earlier indices)`` of codes ``value`` (codebook vectors,
        as the guide samples them; each vector is read as its nearest entry)."""
        shape = value.shape[:-1]
        indices = self._indices(value)
        log_p = self.prior.logits(indices).gather(-1, indices.unsqueeze(-1)).squeeze(-1).sum(-1)
        return log_p.reshape(shape)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()):
        """Codes drawn position by position, shape ``sample_shape + batch + (M * D,)``."""
        shape = torch.Size(sample_shape) + self.batch_shape
        n, guide = max(1, shape.numel()), self.prior.guide
        device = guide.codebook.device
        indices = torch.zeros(n, guide.num_positions, dtype=torch.long, device=device)
        for m in range(guide.num_positions):
            logits = self.prior.logits(indices)[:, m]
            indices[:, m] = torch.distributions.Categorical(logits=logits).sample()
        return guide.codebook[indices].reshape(shape + self.event_shape)
