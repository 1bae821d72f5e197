"""The ``infosam`` command: each subcommand is a thin layer over a Python function that is also the API.

Every subcommand lives in its own module of this package and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under infosam.cli, in the order they appear in --help.
SUBCOMMAND_MODULES = (
    "train",
    "eval",
    "experiment",
    "report",
    "predict",
    "export",
    "serve",
    "info",
    "data",
    "cache",
    "demo",
)


class CLIError(Exception):
    """A user-facing error: printed as one message, no traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infosam",
        description="InfoSAM: fine-tune SAM with PEFT, taught by the frozen pretrained SAM.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"infosam.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"infosam.cli.{name}":
                continue  # subcommand not available in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CLIError as err:
        print(f"infosam {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        # Library code raises these with messages written for users (they name the file or option).
        print(f"infosam {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
