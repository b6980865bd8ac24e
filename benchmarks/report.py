"""What every benchmark does with its table: print it with the command and the machine, and append it to notes."""

from __future__ import annotations

import platform
import sys
from datetime import date

import torch


def publish(title: str, argv: list[str] | None, details: str, table: str, notes: str) -> str:
    """Print a markdown section (title, command, machine, `details`, `table`) and append it to `notes` ('' skips)."""
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    report = (
        f"\n## {title}, {date.today()}\n\n`{command}`\n\nMachine: {platform.machine()}, {torch.get_num_threads()} CPU "
        f"threads, torch {torch.__version__}{gpu}; "
        f"{details}\n\n{table}\n"
    )
    print(report)
    if notes:
        with open(notes, "a") as f:
            f.write(report)
    return report
