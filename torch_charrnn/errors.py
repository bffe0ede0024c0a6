"""Errors that reach the user as one clear message (``charrnn: error: ...``), never a traceback."""


class CharRNNError(ValueError):
    """Bad input or a run that cannot go on; the message names the problem and the fix."""


class CorpusError(CharRNNError):
    """A corpus that cannot be used."""


class ConfigError(CharRNNError):
    """A hyperparameter or option outside its valid range."""


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``ok``."""
    if not ok:
        raise ConfigError(message)


class RunError(CharRNNError):
    """A run that started and cannot go on (divergence, a checkpoint that cannot be written)."""


class DivergedError(RunError):
    """Training produced a non-finite loss or gradient."""
