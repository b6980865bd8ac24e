"""The evaluate command as the tests of tests/tools/test_evaluate*.py run it (run: no progress bar, eval folders under
tmp_path/evals) and the rows of the results.csv it writes (rows_of)."""

import csv

from lightning_diffusion.__main__ import main


def rows_of(folder):
    with open(folder / "results.csv", newline="") as file:
        reader = csv.DictReader(file)
        return reader.fieldnames, list(reader)


def run(tmp_path, *args):
    return main(["evaluate", *args, "--progress", "false", "--output_dir", str(tmp_path / "evals")])
