"""Every expected mistake ends as one line on stderr, `error: <what is wrong> <what to do>`, and a non-zero exit.

`one_line_errors()` wraps each command (the training CLI and every tool) around its whole run, so an error raised by a
constructor, by jsonargparse, by a DataModule's `prepare_data`/`setup`, by the model's `setup` or by a training
step is said the same way. Expected are bad input (ValueError and its CheckpointError, argument and YAML errors,
Lightning's MisconfigurationException, missing files: exit 2) and failures of a run that the user can act on (a
non-finite loss, a path that cannot be written or a full disk, out of GPU memory, a lost rank or a collective
timeout that callbacks.LostRank has said: exit 1). A stop signal exits 128 + the signal, as a shell reports a
process ended by it: 143 after SIGTERM (or SIGUSR1), 130 after Ctrl-C. Anything else is a bug and keeps its
traceback; LIGHTNING_DIFFUSION_DEBUG=1 lets every error through with its traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_diffusion.errors.arguments import (
    PROGRAM,
    SUBCOMMANDS,
    _first_line,
    _one_line,
    argument_sentence,
    import_class,
    parse_arguments,
    yaml_sentence,
)
from lightning_diffusion.errors.ranges import at_least, check_range

__all__ = [
    "PROGRAM",
    "SUBCOMMANDS",
    "argument_sentence",
    "at_least",
    "check_range",
    "import_class",
    "one_line_errors",
    "parse_arguments",
    "sentence",
]

DEBUG_VARIABLE = "LIGHTNING_DIFFUSION_DEBUG"
INPUT_ERROR, RUN_ERROR = 2, 1  # exit codes: the input is wrong; the run failed

_INPUT = (
    ValueError,
    ArgumentError,
    yaml.YAMLError,
    MisconfigurationException,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
)
_RUN = (FloatingPointError, OSError, torch.OutOfMemoryError)


def debugging() -> bool:
    """Whether LIGHTNING_DIFFUSION_DEBUG asks for the full tracebacks."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


STOPPED_BY_SIGNAL, INTERRUPTED = 128 + signal.SIGTERM, 128 + signal.SIGINT  # exit codes: SIGTERM, Ctrl-C


@contextmanager
def one_line_errors(args: Sequence[str] | None = None, command: str | None = None) -> Iterator[None]:
    """Turns an expected error of the block into `error: <sentence>` on stderr and SystemExit(2 or 1); `args`
    (the command line) lets a YAML error name its file, and a parse error's hint names `command` (default: the
    training subcommand in `args`)."""
    try:
        yield
    except SIGTERMException as error:  # a stop signal (callbacks.CheckpointOnSignal saved or stopped, and said so)
        if debugging():
            raise
        # 128 + the signal, so `fit && predict` stops and SLURM sees no success; CheckpointOnSignal marks the
        # exception with its signal (`signum`), SIGUSR1 counts as SIGTERM
        code = INTERRUPTED if getattr(error, "signum", None) == signal.SIGINT else STOPPED_BY_SIGNAL
        raise SystemExit(code) from error
    except KeyboardInterrupt as error:  # a Ctrl-C that no stop handler took (before the run), or a second one
        if debugging():
            raise
        _say(interrupted_sentence(error))
        raise SystemExit(INTERRUPTED) from error
    except SystemExit as error:
        # Lightning's trainer answers a Ctrl-C inside a run with its clean-up and sys.exit(1)
        if isinstance(error.__context__, KeyboardInterrupt) and not debugging():
            _say(interrupted_sentence(error.__context__))
            raise SystemExit(INTERRUPTED) from error
        raise
    except Exception as error:
        said = getattr(error, "one_line", None)  # a fault a callback has said (callbacks.LostRank)
        if debugging() or not (said or isinstance(error, (*_INPUT, *_RUN))):
            raise  # a bug: its traceback
        _say(said or sentence(error, args, command))
        raise SystemExit(INPUT_ERROR if isinstance(error, _INPUT) and not said else RUN_ERROR) from error


def _say(text: str) -> None:
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()


def interrupted_sentence(error: BaseException) -> str:
    """A Ctrl-C that ended the run (`error` names a second one: callbacks.CheckpointOnSignal)."""
    return (
        f"{str(error) or 'interrupted by Ctrl-C'}: nothing was saved since the newest checkpoint; a fit "
        "resumes from it with --ckpt_path last."
    )


def sentence(error: BaseException, args: Sequence[str] | None = None, command: str | None = None) -> str:
    """The one line that says `error` (a parse error's hint names `command`, see `argument_sentence`)."""
    error = _innermost(error)
    if isinstance(error, ArgumentError):
        return argument_sentence(str(error), args, command)
    if isinstance(error, yaml.YAMLError):
        return yaml_sentence(error, args)
    if isinstance(error, torch.OutOfMemoryError):
        return (
            f"out of GPU memory ({_first_line(error)}): lower data.batch_size (or model.sample_batch_size), "
            "or train in bf16-mixed precision."
        )
    if isinstance(error, OSError) and error.strerror and (error.filename or error.errno == errno.ENOSPC):  # the OS's
        return os_sentence(error)
    return _one_line(str(error)) or type(error).__name__


def _innermost(error: BaseException) -> BaseException:
    """jsonargparse wraps a constructor's ValueError in a multi-line report of union types: the original says it."""
    while type(error) is ValueError and "\n" in str(error).strip():
        cause = error.__cause__ or error.__context__
        if not isinstance(cause, _INPUT):
            break
        error = cause
    return error


_OS_HINTS = {
    PermissionError: "choose a folder you can write to (--output_dir for runs) or fix its permissions",
    NotADirectoryError: "a part of that path is a file, not a folder: choose another path (--output_dir for runs)",
    FileExistsError: "something is in the way there: move it or choose another path",
    IsADirectoryError: "it is a folder: give a file",
    FileNotFoundError: "check the path",
}


def os_sentence(error: OSError) -> str:
    hint = next((text for kind, text in _OS_HINTS.items() if isinstance(error, kind)), None)
    if hint is None:
        hint = (
            "free disk space or choose another --output_dir"
            if error.errno == errno.ENOSPC
            else "check the path and the disk"
        )
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p)
    return f"{paths + ': ' if paths else ''}{error.strerror.lower()}: {hint}."
