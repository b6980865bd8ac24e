"""Range checks of the options that take a count, a size, a probability, a rate or a weight, made where each is
built (a constructor, a tool's options): a value outside its range is one sentence naming the option, before any
work. notes/reliability.md lists every option with its range."""

from __future__ import annotations

import math
from typing import Any


def check_range(
    owner: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise `<owner> <name> must be <range>, got <value>.` unless `value` (None: not given, always fine) lies in
    [low, high] (`low_open`/`high_open`: that end excluded); NaN is never in range."""
    if value is None:
        return
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not (below or above or (isinstance(value, float) and math.isnan(value))):
        return
    if low is not None and high is not None:
        rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rule = f"greater than {low:g}" if low_open else f"at least {low:g}"
    else:
        rule = f"less than {high:g}" if high_open else f"at most {high:g}"
    raise ValueError(f"{owner} {name} must be {rule}, got {value!r}.")


def at_least(owner: str, low: float, **values: Any) -> None:
    """`check_range(owner, name, value, low)` for each option given: counts (low 1) and sizes (low 0)."""
    for name, value in values.items():
        check_range(owner, name, value, low)
