"""``python -m bench``: the command-line entry point.

Each subcommand lives in ``bench/cli/commands/<name>.py`` and registers its ``main(args) -> int`` in
:data:`bench.cli.commands.COMMANDS`; its module exposes ``HELP`` (one line) and ``add_arguments(parser)``. Modules named
by ``--plugin`` are imported before the parsers are built, so a plugin's executor (and its flags) is a choice of
``--executor``. User errors (:class:`bench.core.errors.UserError`) print one line and exit 2, no traceback.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys

from bench.cli.commands import COMMANDS
from bench.core.errors import UserError, one_line_text
from bench.core.registry import import_plugins


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input in one line (no usage block) and exits 2."""

    def _parse_optional(self, arg_string):
        """``-3se``, ``-1,0``, ``-.5``: values (no option of this CLI starts with a digit), so that a bad value
        after an option is named by its own check instead of "expected one argument"."""
        if len(arg_string) > 1 and arg_string[0] == "-" and (arg_string[1].isdigit() or arg_string[1] == "."):
            return None
        return super()._parse_optional(arg_string)

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {one_line_text(message, 2000)}\n")
        raise SystemExit(2)


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` gets its arguments (each command's ``add_arguments``
    may import what its defaults need), so ``--help`` and unrelated commands stay fast. ``None``: all of them."""
    parser = _Parser(prog="python -m bench",
                     description="Benchmark MAP solvers for imaging inverse problems with normalizing-flow priors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, command in COMMANDS.items():
        mod = sys.modules[command.__module__]
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if wanted is None or wanted == name:
            mod.add_arguments(p)
        p.set_defaults(_main=command)
    return parser


def plugin_modules(argv) -> list[str]:
    """The modules ``argv`` names with ``--plugin MODULE`` or ``--plugin=MODULE``, in order."""
    found = []
    for i, a in enumerate(argv):
        if a.startswith("--plugin="):
            found.append(a.split("=", 1)[1])
        elif a == "--plugin" and i + 1 < len(argv):
            found.append(argv[i + 1])
    return found


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        import_plugins(plugin_modules(argv))
    except UserError as e:
        sys.stderr.write(f"error: {one_line_text(e, 2000)}\n")
        return 2
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except UserError as e:   # one line, control characters and escapes removed, whatever the message holds
        sys.stderr.write(f"error: {one_line_text(e, 2000)}\n")
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:   # a full disk outside the run's own writes (report, tune): one line
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        sys.stderr.write(f"error: disk full writing {one_line_text(e.filename or '(unknown file)')}: {e.strerror}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished work units are saved, rerun the same command to resume\n")
        return 130
