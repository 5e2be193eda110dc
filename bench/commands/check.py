"""Placeholder: being implemented in this session."""
HELP = "compare a run against a reference run (regression check)"


def add_arguments(p):
    pass


def main(args) -> int:
    from bench.errors import UserError

    raise UserError("this command is not implemented yet")
