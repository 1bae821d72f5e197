"""The ``infosam`` command: each subcommand is a thin layer over a Python function that is also the API.

Every subcommand lives in its own module of this package and exposes ``register(subparsers)``, which adds its
parser and sets ``func`` (called with the parsed namespace, returning an exit code). Commands that run a model
add :func:`add_threads_option`; :func:`main` sets torch's thread count for them (and restores it afterwards).
"""

from __future__ import annotations

import argparse
import importlib
import os
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

DEFAULT_THREADS = 1
THREADS_HELP = (
    "torch CPU threads (default: $OMP_NUM_THREADS when set, else 1). Why 1: measured on a 2-core machine "
    "shared with other jobs (benchmarks/bench_threads.py), 2 threads made tiny-model training 6.7x and "
    "evaluation 9x slower and ViT-B at 256 px 1.8x slower, because threads wait on each other when the cores are busy; "
    "on a GPU the CPU threads barely matter. On a CPU machine of your own, raise it (e.g. --threads 8)."
)


class CLIError(Exception):
    """A user-facing error: printed as one message, no traceback, exit code 2."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (see :data:`THREADS_HELP`); :func:`main` applies it."""
    parser.add_argument("--threads", type=int, default=None, metavar="N", help=THREADS_HELP)


def resolve_threads(threads: int | None) -> int:
    """The torch thread count a command uses: ``threads`` when given, else ``$OMP_NUM_THREADS`` when set, else
    :data:`DEFAULT_THREADS`. CLIError for an ``OMP_NUM_THREADS`` that is not a positive integer."""
    if threads is not None:
        if threads < 1:
            raise CLIError(f"--threads must be >= 1, got {threads}")
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not env:
        return DEFAULT_THREADS
    try:
        return positive_int(env)
    except argparse.ArgumentTypeError:
        raise CLIError(
            f"OMP_NUM_THREADS={env!r} must be an integer >= 1 (or unset; or pass --threads)"
        ) from None


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
    from ..errors import RunError
    from ..extras import MissingExtraError
    from .torchpair import TorchPairError, check_torch_pair

    try:
        # before any model code: a torchvision built for another torch otherwise dies deep inside an import
        check_torch_pair(import_torchvision="threads" in vars(args) or args.command == "info")
        if "threads" in vars(args):  # the commands that run a model
            # opt-in (infosam.runtime says why): faster steps, but the process keeps its peak memory
            if os.environ.get("INFOSAM_ALLOCATOR", "").strip().lower() == "keep":
                from ..runtime import tune_allocator

                tune_allocator()
            args.threads = resolve_threads(args.threads)
            return _with_threads(args)
        return _finish(int(args.func(args) or 0))
    except BrokenPipeError:
        # The reader went away (`infosam info --json | head`): stop quietly, like other Unix tools.
        _silence_stdout()
        return 141
    except RunError as err:  # a run stopped on purpose (NaN, Ctrl-C, lock, full disk): one line says why
        print(f"infosam {args.command}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"infosam {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, TorchPairError) as err:
        print(f"infosam {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MissingExtraError as err:  # an optional dependency: the message says which extra to install
        print(f"infosam {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:
        # Library code raises these with messages written for users (they name the file or option); OSError
        # covers what the system says about a path (a file where a folder is expected, no permission, disk full).
        print(f"infosam {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _with_threads(args: argparse.Namespace) -> int:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _finish(int(args.func(args) or 0))
    finally:
        torch.set_num_threads(previous)  # main() may run inside another program (tests)


def _finish(code: int) -> int:
    sys.stdout.flush()  # a closed pipe shows here, inside main's handler, not at interpreter exit
    return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests)
        pass


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
