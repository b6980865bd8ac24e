"""jsonargparse's and PyYAML's reports of a bad command line or config as one sentence (errors.sentence says them):
which option, file, class or subcommand is wrong, and the command whose --help lists the right ones."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Sequence
from typing import Any

import yaml
from jsonargparse import ArgumentError

PROGRAM = "python -m lightning_diffusion"
SUBCOMMANDS = ("fit", "validate", "test", "predict")  # LightningCLI's; the tools are lightning_diffusion.tools


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


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
