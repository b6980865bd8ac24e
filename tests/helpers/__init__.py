"""What the tests share: generated datasets, the quality checks of a moons model, the tiny image runs, and the
scripts and callbacks of the tests' subprocesses."""
