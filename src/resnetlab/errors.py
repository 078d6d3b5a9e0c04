"""Exceptions shared by the whole package (a leaf module: it imports nothing)."""


class UserError(ValueError):
    """Bad input a user can fix: the CLI prints the message on one line and exits with code 2."""


class TrainingFailed(RuntimeError):
    """A run failed at run time (e.g. the loss became NaN); the CLI exits with code 1."""


class Interrupted(Exception):
    """Training stopped by SIGINT/SIGTERM after its checkpoint was saved; the CLI exits 128 + signum."""

    def __init__(self, signum: int, message: str = "") -> None:
        super().__init__(message or f"interrupted by signal {signum}; checkpoint saved, resume with --resume")
        self.signum = signum
