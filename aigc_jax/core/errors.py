"""User-facing errors.

A `UserError` is raised for anything a user can get wrong (a bad flag, a missing file, a config value out of
range). The CLI prints its message as one line on stderr and exits non-zero, never with a traceback.
"""


class UserError(Exception):
    """A mistake in user input; the message says what was wrong and what is accepted."""


class NonFiniteLossError(UserError):
    """Training produced a NaN/Inf loss; the message names the first step where it happened."""

    def __init__(self, step: int, player: str | None = None):
        who = f" (player {player!r})" if player else ""
        super().__init__(
            f"loss became NaN/Inf at step {step}{who}; the run was stopped and no state from that step was "
            "checkpointed (lower optim.lr or enable optim.clip_norm)"
        )
        self.step = step


class Interrupted(Exception):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM (pre-emption). The message says what was checkpointed;
    ``exit_code`` is the shell's convention for the signal (130 or 143)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
