"""Placeholder: being implemented in this session."""
HELP = "tune declared step sizes on validation images"


def add_arguments(p):
    pass


def main(args) -> int:
    from bench.errors import UserError

    raise UserError("this command is not implemented yet")
