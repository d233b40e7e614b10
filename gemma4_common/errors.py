"""The one user-error type. The CLI prints it on one line and exits with status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unmet precondition: says what went wrong and how to fix it.

    Raised anywhere in the project; the CLI turns it into `error: <message>` and exit status 2.
    Tracebacks are reserved for bugs.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.problem if not self.fix else f"{self.problem}; {self.fix}"
        return " ".join(text.split())


class GateFailure(Exception):
    """A measured result is outside its gate (accuracy, regression). CLI exit status 1."""

    exit_code = 1
