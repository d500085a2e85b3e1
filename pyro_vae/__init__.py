"""pyro_vae: variational autoencoders written as Pyro models and guides.

The pieces (see DESIGN.md): priors p(z), guides q(z|x), likelihoods p(x|z), composed by
:class:`VAE` (or, with several latent layers, :class:`HierarchicalVAE`) into
``vae.model`` / ``vae.guide``; recipes in ``models/*.toml``;
training by SVI (:mod:`pyro_vae.trainer` and :mod:`pyro_vae.run`); evaluation generic over Pyro
(:mod:`pyro_vae.infer`).
"""

__version__ = "0.1.0"

from .errors import (CheckpointError, ConfigError, DataError, PyroVAEError,  # noqa: E402
                     RunFolderError, TrainingDiverged)
from .guides import DiagonalNormalGuide  # noqa: E402
from .hierarchy import (BottomUpGuide, GaussianConditional, HierarchicalVAE,  # noqa: E402
                        LadderGuide)
from .likelihoods import BernoulliLikelihood  # noqa: E402
from .priors import StandardNormalPrior  # noqa: E402
from .vae import VAE  # noqa: E402

__all__ = ["VAE", "HierarchicalVAE", "BottomUpGuide", "LadderGuide", "GaussianConditional",
           "StandardNormalPrior", "DiagonalNormalGuide", "BernoulliLikelihood",
           "PyroVAEError", "ConfigError", "DataError", "CheckpointError", "RunFolderError",
           "TrainingDiverged", "__version__"]
