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


class Interrupted(Exception):  # noqa: N818 - a stop the user asked for, not an error
    """Training stopped by SIGINT or SIGTERM after writing ``last.ckpt`` at the step it reached:
    the command line says so in one line, with the command that resumes, and exits 128 + the
    signal's number, as a process ended by it would."""

    def __init__(self, signum: int, step: int, path: str):
        self.signum, self.step, self.path = signum, step, path
        super().__init__(f"stopped at step {step}; {path} holds that step")

    @property
    def code(self) -> int:
        return 128 + self.signum
