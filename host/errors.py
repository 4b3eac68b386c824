"""The one error type the CLI turns into `host: message` and an exit code."""


class HostError(Exception):
    """A failure the user can act on. The message says what went wrong and what to do."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(HostError):
    exit_code = 2


class UnitFailure(HostError):
    """One or more units failed a fleet operation (the others were still done)."""

    exit_code = 1
