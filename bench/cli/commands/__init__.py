"""One module per CLI subcommand: ``HELP`` (one line), optionally ``DESCRIPTION``, ``add_arguments(parser)`` and
``main(args) -> int`` registered with ``@COMMANDS.register("name")`` (see bench/cli/__init__.py). A new command is one new
module here; the registry's discovery imports every module of this package when the parser is built."""
from bench.core.registry import Registry

COMMANDS = Registry("command", "bench.cli.commands")
