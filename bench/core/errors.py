"""Exceptions the CLI turns into one-line messages (no traceback), and the one-line text helpers that keep
terminal control characters (ANSI escapes, carriage returns, bells) out of messages and result rows."""
import re


class UserError(Exception):
    """Bad input from the user: unknown name, bad grid, missing path, corrupt checkpoint.

    The CLI prints ``error: <message>`` and exits with status 2.
    """


class DiskFull(UserError):
    """The disk (or the user's quota) filled up while the harness wrote a file: one line naming the file (and, from
    the runner, how much of the run was kept); nothing half-written stays behind."""


class BudgetExceeded(RuntimeError):
    """A solver asked the prior for more passes than its per-image budget allows (README contract 2)."""

    def __init__(self, rows, used, budget):
        self.rows, self.used, self.budget = list(rows), used, budget
        super().__init__(f"overspend: solver asked for pass {used + 1} of a budget of {budget} "
                         f"(rows {self.rows[:8]}{'...' if len(self.rows) > 8 else ''})")


def one_line(e: BaseException, limit: int = 400) -> str:
    """``Type: message`` of an exception on one line, at most ``limit`` characters (what result rows record)."""
    return one_line_text(f"{type(e).__name__}: {e}", limit)


# ANSI/VT escape sequences (CSI "ESC [ ... final", OSC "ESC ] ... BEL|ESC \\", two-character "ESC x"), then any
# other C0/C1 control character; what a terminal would act on instead of print
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def printable(text) -> str:
    """``text`` with terminal escape sequences removed and every run of other control characters (line breaks and
    tabs included) turned into one space: safe to print and to store."""
    return _CONTROL.sub(" ", _ESCAPES.sub("", str(text)))


def one_line_text(text: str, limit: int = 400) -> str:
    """``text`` on one line (line breaks become spaces, control characters and escapes are removed), at most
    ``limit`` characters."""
    msg = printable(text)
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."
