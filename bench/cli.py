"""``python -m bench``: the command-line entry point.

Each subcommand lives in ``bench/commands/<name>.py`` and exposes ``HELP`` (one line), ``add_arguments(parser)``
and ``main(args) -> int``. User errors (:class:`bench.errors.UserError`) print one line and exit 2, no traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from bench.errors import UserError

COMMANDS = {
    "list": "list_",
    "run": "run",
    "report": "report",
    "check": "check",
    "compare": "compare",
    "export": "export",
    "reference": "reference",
    "tune": "tune",
    "train-prior": "train_prior",
    "inspect-prior": "inspect_prior",
    "sample-priors": "sample_priors",
    "perf": "perf",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input in one line (no usage block) and exits 2."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser; only the subcommand named in ``argv`` gets its arguments (each command's ``add_arguments``
    may import what its defaults need), so ``--help`` and unrelated commands stay fast. ``None``: all of them."""
    parser = _Parser(prog="python -m bench",
                     description="Benchmark MAP solvers for imaging inverse problems with normalizing-flow priors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    wanted = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"bench.commands.{module}")
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if wanted is None or wanted == name:
            mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished work units are saved, rerun the same command to resume\n")
        return 130
