"""The per-datapoint log-likelihood estimates of an evaluation, kept in its run folder as
``loglik-k<K>-seed<S>.pt`` (tensors only; read with ``torch.load(weights_only=True)``), which
``pyro-vae compare`` and the analysis scripts reuse instead of evaluating again.
"""

from pathlib import Path

from . import infer
from .checkpoint import atomic_save, safe_load
from .errors import CheckpointError


def results_path(run_dir, k, seed):
    """Where the per-datapoint estimates of one evaluation are kept."""
    return Path(run_dir) / f"loglik-k{int(k)}-seed{int(seed)}.pt"


#: Value of the ``"format"`` key of a saved log-likelihood result.
RESULT_FORMAT = "pyro_vae.loglik"


def save_result(run_dir, result):
    """Save a :class:`~pyro_vae.infer.LogLikelihoodResult` (tensors only, atomically)."""
    atomic_save({"format": RESULT_FORMAT, **result.state_dict()},
                results_path(run_dir, result.num_particles, result.seed))


def load_result(run_dir, k, seed):
    """The saved estimates of ``k`` particles and ``seed``, or ``None`` if there are none
    (or the file is unreadable: then it is recomputed)."""
    path = results_path(run_dir, k, seed)
    if not path.is_file():
        return None
    try:
        state = safe_load(path)
        if state.pop("format", None) != RESULT_FORMAT:
            return None
        return infer.LogLikelihoodResult.from_state_dict(state)
    except (CheckpointError, TypeError):
        return None
