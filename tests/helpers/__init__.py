"""What the tests share: generated datasets, the quality checks of a moons model, the tiny image runs, the scripts and
callbacks of the tests' subprocesses, the mistakes of tests/cli/test_errors.py and the folder they run in, the signal
runs, the exact networks of the formulations, short in-process fits, the evaluate command and reading a checkpoint."""
