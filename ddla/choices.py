"""Choice-valued config fields: the allowed values are declared once, next to the field, and one
function checks every such field of a config with the same informative error.

A field made by :func:`choice` carries its allowed values (a sequence, or a function returning
one, for registries that are imported late) in its dataclass metadata; a config's
``__post_init__`` calls :func:`check_choices` first. The error names the setting, the bad value
and every allowed one, as ``ddla run --set`` users need.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(kw_only=True)
    ... class Demo:
    ...     colour: str = choice("red", ("red", "green"), noun="colour")
    ...     def __post_init__(self) -> None:
    ...         check_choices(self, "demo")
    >>> Demo().colour
    'red'
    >>> try:
    ...     Demo(colour="blue")
    ... except Exception as exc:
    ...     print(f"{exc} / {exc.help}")
    demo.colour: unknown colour 'blue' / choose one of: red, green
    >>> allowed(Demo, "colour")
    ('red', 'green')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from ddla.errors import ConfigError

Values = Sequence[str] | Callable[[], Sequence[str]]


def choice(
    default: str,
    values: Values,
    *,
    noun: str,
    note: str = "",
    also: tuple[str, Callable[[str], bool]] | None = None,
) -> Any:
    """A dataclass field whose value must be one of ``values``.

    ``noun`` names what the value is (``unknown backend 'x'``); ``note`` is appended to the
    hint; ``also`` is ``(description, accepts)`` for a family of values outside the list (a
    dataset ``npz:PATH``), shown in the hint as ``..., or npz:PATH``.
    """
    meta = {"choices": values, "noun": noun, "note": note, "also": also}
    return dataclasses.field(default=default, metadata=meta)


def _values(spec: Values) -> tuple[str, ...]:
    return tuple(spec() if callable(spec) else spec)


def allowed(cls: Any, name: str) -> tuple[str, ...]:
    """The values field ``name`` of config class (or instance) ``cls`` accepts."""
    for f in dataclasses.fields(cls):
        if f.name == name and "choices" in f.metadata:
            return _values(f.metadata["choices"])
    raise KeyError(f"{name!r} is not a choice field of {cls!r}")


def check_choices(config: Any, section: str) -> None:
    """Raise ConfigError for the first choice field of ``config`` that holds a value outside
    its declared ones; ``section`` prefixes the setting's name (``comm`` -> ``comm.backend``)."""
    for f in dataclasses.fields(config):
        if "choices" not in f.metadata:
            continue
        meta = f.metadata
        value = getattr(config, f.name)
        values = _values(meta["choices"])
        also = meta["also"]
        if value in values or (also is not None and isinstance(value, str) and also[1](value)):
            continue
        extra = f", or {also[0]}" if also is not None else ""
        raise ConfigError(
            f"{section}.{f.name}: unknown {meta['noun']} {value!r}",
            help=f"choose one of: {', '.join(values)}{extra}{meta['note']}",
        )
