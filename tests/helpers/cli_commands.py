"""Runs several CLI commands one after the other in one process:

    python tests/helpers/cli_commands.py '[["fit", ...], ["predict", ...]]'

Under DDP, Lightning's launcher starts the other ranks once, with this script and its arguments, and the later
commands reuse the process group: one launch covers fit, predict and validate (tests/cli/test_scale.py)."""

import json
import sys

from lightning_diffusion.cli import main

if __name__ == "__main__":
    for args in json.loads(sys.argv[1]):
        main(args)
