"""Errors raised by pyro_vae.

Every error that bad input can cause derives from :class:`PyroVAEError`, so the CLI can
print its message (which says what was wrong and what to do) without a traceback.
"""


class PyroVAEError(Exception):
    """Base class of the errors pyro_vae raises for bad input or a failed run."""


class ConfigError(PyroVAEError, ValueError):
    """A recipe, a component name or an option is invalid."""


class DataError(PyroVAEError, ValueError):
    """A data set is missing, truncated, corrupt or holds values the model cannot take."""


class CheckpointError(PyroVAEError):
    """A checkpoint is missing, truncated, corrupt, foreign or unsafe to load."""


class RunFolderError(PyroVAEError):
    """A run folder exists where a new run would be written, or is not a run folder."""


class TrainingDiverged(PyroVAEError):
    """The training loss became NaN or infinite.

    :param int epoch: the epoch (1-based) in which it happened.
    :param int step: the global optimizer step (1-based) at which it happened.
    """

    def __init__(self, message, epoch, step):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class TrainingWarning(UserWarning):
    """Training went on, but something about it needs the user's attention (for example
    the objective diverging far below the untrained model's)."""
