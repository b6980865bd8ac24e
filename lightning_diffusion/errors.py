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

import difflib
import errno
import importlib
import inspect
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentError
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException

DEBUG_VARIABLE = "LIGHTNING_DIFFUSION_DEBUG"
INPUT_ERROR, RUN_ERROR = 2, 1  # exit codes: the input is wrong; the run failed
PROGRAM = "python -m lightning_diffusion"
SUBCOMMANDS = ("fit", "validate", "test", "predict")  # LightningCLI's; the tools are lightning_diffusion.tools

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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


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


def config_files(args: Sequence[str] | None) -> list[str]:
    """The files given with --config (or -c) on a command line, to name the one whose YAML is broken."""
    args = list(args or [])
    files = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config", "-c")]
    return files + [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]


def yaml_sentence(error: yaml.YAMLError, args: Sequence[str] | None = None) -> str:
    where = "a YAML file"
    for path in config_files(args):  # the parser read them from strings: find the broken one
        try:
            with open(path) as file:
                yaml.safe_load(file)
        except yaml.YAMLError as found:
            error, where = found, path
            break
        except OSError:
            continue
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or _first_line(error)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{where} is not valid YAML ({problem}{at}): fix it there."


def _subcommand(args: Sequence[str] | None) -> str:
    return next((arg for arg in args or [] if arg in SUBCOMMANDS), "fit")


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def import_class(class_path: str) -> type:
    """The class named by its import path, e.g. lightning_diffusion.DiffusionModule."""
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _options_of(class_path: str) -> list[str]:
    """The constructor arguments of a class named by its import path ([] if it cannot be imported)."""
    try:
        cls = import_class(class_path)
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except Exception:  # noqa: BLE001 - only a suggestion is lost
        return []


_STRUCTURE = re.compile(
    r"^(- )?(Does not validate against|Subtypes:|Errors:|Given value|Expected a <class 'NoneType'>|"
    r"Problem with given class_path .*:$)"
)
_CLASS_PATH = re.compile(r"class_path '([^']+)'|Got value: Namespace\(class_path='([^']+)'")


def _type_name(text: str) -> str:
    """`<class 'int'>` -> int, `typing.Literal['a', 'b']` -> one of 'a', 'b', `<class 'list'>` -> a list ([x, y])."""
    literal = re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", text.strip())
    if literal:
        return f"one of {literal.group(1)}"
    name = re.sub(r"<class '([^']+)'>", r"\1", text).strip()
    return "a list ([x, y])" if name == "list" else name


def parse_arguments(parser: Any, args: Sequence[str], command: str, required: str | None = None) -> Any:
    """`parser.parse_args(args)` for a tool (`command`, e.g. "python -m lightning_diffusion evaluate", its parser
    built with exit_on_error=False): a bad command line is one sentence whose hints name this command; `required`,
    if given, is the sentence for missing required arguments."""
    try:
        return parser.parse_args(args)
    except ArgumentError as error:
        if required and "arguments are required" in str(error):
            raise ValueError(required) from error
        raise ValueError(argument_sentence(str(error), args, command)) from error


def argument_sentence(message: str, args: Sequence[str] | None = None, command: str | None = None) -> str:
    """jsonargparse's report of a bad command line or config (a tree of union subtypes) as one sentence; its hints
    name `command` (default: the training CLI's subcommand in `args`)."""
    command = command or f"{PROGRAM} {_subcommand(args)}"
    help_hint = f"`{command} --help` lists every option"
    key = ".".join(re.findall(r'Parser key "([^"]+)"', message))
    # the innermost class named: "Problem with given class_path 'X'", or a nested "Got value: Namespace(class_path='Y'"
    classes = [m.group(1) or m.group(2) for m in _CLASS_PATH.finditer(message)]
    cls = classes[-1] if classes else None
    lines = [re.sub(r'^Parser key "[^"]+":\s*', "", line.strip()) for line in message.splitlines()]
    reasons = [line for line in lines if line and not _STRUCTURE.match(line)]

    if match := re.search(r"Option '([^']+)' is not accepted", message):
        option = match.group(1)
        close = difflib.get_close_matches(option, _options_of(cls), n=1) if cls else []
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        owner = _short(cls) if cls else f"--{key}"
        help_key = f"--{key}.help {_short(cls)}" if cls and key else "--help"
        return f"{owner} has no option {option!r}{suggestion}: `{command} {help_key}` lists its options."
    if match := re.search(r"does not accept option '([^']+)'", message):
        option = match.group(1)
        section, _, name = option.rpartition(".")
        options = _options_of("lightning.pytorch.Trainer") if section == "trainer" else []
        close = difflib.get_close_matches(name, options, n=1)
        suggestion = f" (did you mean '{section}.{close[0]}'?)" if close else ""
        return f"there is no option {option!r}{suggestion}: {help_hint}."
    if match := re.search(r"invalid choice: '([^']*)' \(choose from (.+)\)", message):
        return f"{match.group(1)!r} is not a subcommand: use one of {match.group(2)} (`{PROGRAM} --help`)."
    if re.search(r'expected "(subcommand|command)" to be one of .* but it was not provided', message):
        return f"a command is missing: `{PROGRAM} --help` lists the commands (fit trains a model)."
    if match := re.search(r"the following arguments are required: (.+)", message):
        owner = _short(cls) if cls else (f"--{key}" if key else _subcommand(args))
        return (
            f"{owner} needs {match.group(1).strip()}: give the experiment's config with --config "
            "configs/<experiment>.yaml (for example configs/moons.yaml), or set them on the command line."
        )
    if match := re.search(r"File does not exist: '?([^'\n]+)'?", message):
        if key not in ("", "config"):
            return f"--{key}: {match.group(1)} does not exist: give an existing file."
        return (
            f"the config file {match.group(1)} does not exist: give the path of an experiment's YAML "
            "(for example configs/moons.yaml)."
        )
    if "Problems parsing config" in message:
        return yaml_sentence(yaml.YAMLError(_one_line(message.split(":", 1)[-1])), args)
    expected = [
        (t, got)
        for t, got in re.findall(r"Expected an? (.+?)(?:\. Got value: (.+))?$", message, re.M)
        if "NoneType" not in t
    ]
    if key and expected:
        types = " or ".join(dict.fromkeys(_type_name(t) for t, _ in expected))
        given = next((got for _, got in expected if got), None) or next(
            iter(re.findall(r"Given value: (.+)", message)), ""
        )
        given = re.sub(r"^NestedArg\(key='[^']*', val=(.*)\)$", r"\1", given.strip()).strip("'\"")
        value = f" but got {given!r}" if given and len(given) < 80 else ""
        return f"--{key} expects {types}{value}: fix the value ({help_hint})."
    reason = reasons[-1] if reasons else _one_line(message)
    where = f"--{key}: " if key else ""
    return f"{where}{reason.rstrip('.')}: {help_hint}."
