"""Placeholder: being implemented in this session."""
HELP = "write LEADERBOARD.md tables and figures from a run directory"


def add_arguments(p):
    pass


def main(args) -> int:
    from bench.errors import UserError

    raise UserError("this command is not implemented yet")
