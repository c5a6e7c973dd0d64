"""The ``seg`` command line: one subcommand per pipeline stage.

Each stage package has a ``cli`` module that exports ``COMMANDS``, a dict mapping a subcommand name
to a :class:`Command` (one-line help, an ``add_arguments(parser)`` function and a ``run(args)``
function). Those modules import only the standard library at import time, so ``seg --help`` is fast;
heavy imports (torch, monai) happen inside ``run``.

A :class:`seg.errors.SegError` raised by a command is printed as one line
``seg <command>: error: <message>`` on stderr with exit status 2; a KeyboardInterrupt exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable

from seg.errors import SegError
from seg.version import __version__

# Stage CLI modules, in pipeline order. Each exports COMMANDS: dict[str, Command].
STAGE_MODULES = (
    "seg.commands.ingest",
    "seg.commands.settings",
    "seg.commands.synth",
    "seg.commands.transforms",
    "seg.commands.models",
    "seg.commands.zoo",
    "seg.commands.train",
    "seg.commands.evaluate",
    "seg.commands.segment",
    "seg.commands.finetune",
    "seg.commands.export",
    "seg.commands.report",
)


@dataclass(frozen=True)
class Command:
    """One ``seg`` subcommand.

    Attributes:
        help: one line for ``seg --help``.
        add_arguments: adds the subcommand's arguments to its parser; help strings give units and
            defaults.
        run: executes the command; returns an exit status (None means 0).
        description: longer text for ``seg <command> --help`` (defaults to ``help``).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None


def _commands() -> dict[str, Command]:
    out: dict[str, Command] = {}
    for name in STAGE_MODULES:
        out.update(importlib.import_module(name).COMMANDS)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seg",
        description="Biomedical image segmentation pipeline (U-Net recipe). One subcommand per "
        "workflow stage; the Snakemake workflow calls exactly these.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, cmd in _commands().items():
        p = sub.add_parser(
            name,
            help=cmd.help,
            description=cmd.description or cmd.help,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _version() -> str:
    return f"seg {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args._run(args)
    except SegError as e:
        print(f"seg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seg {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
