"""Placeholder: being implemented in this session."""
HELP = "measure batched speed-up, grid wall times and peak memory"


def add_arguments(p):
    pass


def main(args) -> int:
    from bench.errors import UserError

    raise UserError("this command is not implemented yet")
