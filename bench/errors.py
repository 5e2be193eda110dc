"""Exceptions the CLI turns into one-line messages (no traceback)."""


class UserError(Exception):
    """Bad input from the user: unknown name, bad grid, missing path, corrupt checkpoint.

    The CLI prints ``error: <message>`` and exits with status 2.
    """


class BudgetExceeded(RuntimeError):
    """A solver asked the prior for more passes than its per-image budget allows (README contract 2)."""

    def __init__(self, rows, used, budget):
        self.rows, self.used, self.budget = list(rows), used, budget
        super().__init__(f"overspend: solver asked for pass {used + 1} of a budget of {budget} "
                         f"(rows {self.rows[:8]}{'...' if len(self.rows) > 8 else ''})")


def one_line(e: BaseException, limit: int = 400) -> str:
    """``Type: message`` of an exception on one line, at most ``limit`` characters (what result rows record)."""
    return one_line_text(f"{type(e).__name__}: {e}", limit)


def one_line_text(text: str, limit: int = 400) -> str:
    """``text`` on one line (line breaks become spaces), at most ``limit`` characters."""
    msg = str(text).replace("\r", " ").replace("\n", " ")
    return msg if len(msg) <= limit else msg[:limit - 3] + "..."
