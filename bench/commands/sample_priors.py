"""Placeholder: being implemented in this session."""
HELP = "write sample-grid PNGs of the shipped priors"


def add_arguments(p):
    pass


def main(args) -> int:
    from bench.errors import UserError

    raise UserError("this command is not implemented yet")
