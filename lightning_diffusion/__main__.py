"""`python -m lightning_diffusion <command>` (or `lightning-diffusion <command>`), each command with `--help`.

The training commands fit, validate, test and predict are LightningCLI's (cli.py); the tools evaluate, compare,
export, inspect, posthoc-ema and prepare are tools/<command>.py, each run by its `main(argv)`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentParser
from lightning.pytorch import Trainer

import lightning_diffusion.cli as cli
from lightning_diffusion.errors import PROGRAM, SUBCOMMANDS, one_line_errors, parse_arguments
from lightning_diffusion.tools import compare, evaluate, export, inspect, posthoc_ema, prepare

TOOLS = {
    "evaluate": evaluate,
    "compare": compare,
    "export": export,
    "inspect": inspect,
    "posthoc-ema": posthoc_ema,
    "prepare": prepare,
}


def _first_sentence(doc: str | None) -> str:
    return re.split(r"(?<=\.)\s", (doc or "").strip(), maxsplit=1)[0]


def commands_parser() -> ArgumentParser:
    """The top level, whose help lists every command with the first sentence of its description."""
    parser = ArgumentParser(prog=PROGRAM, description=_first_sentence(__doc__), exit_on_error=False)
    commands = parser.add_subcommands(dest="command")
    for name in SUBCOMMANDS:
        commands.add_subcommand(name, ArgumentParser(), help=_first_sentence(getattr(Trainer, name).__doc__))
    for name, tool in TOOLS.items():
        commands.add_subcommand(name, ArgumentParser(), help=_first_sentence(tool.__doc__))
    return parser


def main(argv: Sequence[str] | None = None) -> Any:
    """Runs the command that `argv` (default: the command line) names; returns what it returns (the CLI, a folder)."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else ""
    if command in TOOLS:
        return TOOLS[command].main(args[1:])
    if command in SUBCOMMANDS or (command.startswith("-") and command not in ("-h", "--help")):
        return cli.main(argv)  # a training command, or LightningCLI's top-level options; None: it reads sys.argv
    with one_line_errors(args, PROGRAM):  # the top level: its help, or one sentence for a command it does not know
        parse_arguments(commands_parser(), args, PROGRAM)


if __name__ == "__main__":
    main()
