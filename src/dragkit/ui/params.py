"""The "advanced parameters" of each method, read generically from its config dataclass (names, types, defaults and
the help in the fields' metadata, :mod:`dragkit.config`, which name the paper symbols), and turned back into a config."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from ..config import apply_overrides, field_help
from ..family import SD, Family, resolve


@dataclass(frozen=True)
class Param:
    method: str
    name: str
    kind: str  # "bool", "int", "float", "tuple", "str"
    value: Any  # the app's default (paper default unless overridden at start)
    paper_default: Any
    help: str


def _kind(typ: Any) -> str:
    optional = [t for t in typing.get_args(typ) if t is not type(None)]
    if len(optional) == 1 and type(None) in typing.get_args(typ):  # Optional[X]: X's widget (None = the family's)
        typ = optional[0]
    if typ is bool:
        return "bool"
    if typ is int:
        return "int"
    if typ is float:
        return "float"
    if typing.get_origin(typ) is tuple:
        return "tuple"
    return "str"


def method_params(method: str, config: Any, family: Family = SD, default_size: int = 512) -> list[Param]:
    """One :class:`Param` per field of ``config`` (an instance of the method's config class); paper defaults as the
    model ``family`` resolves them."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    paper = resolve(cls(), family, default_size)
    return [Param(method, f.name, _kind(hints[f.name]), getattr(config, f.name), getattr(paper, f.name),
                  helps[f.name]) for f in dataclasses.fields(cls)]


def format_value(kind: str, value: Any) -> Any:
    """A config value as its widget shows it (tuples as "2, 3")."""
    if kind == "tuple":
        return "" if value is None else ", ".join(str(v) for v in value)
    return value


def config_from_values(default: Any, params: list[Param], values: list[Any]) -> Any:
    """``default`` with the widgets' ``values`` applied (typed and validated by the config; DragError if not)."""
    assignments = []
    for p, v in zip(params, values):
        if p.kind == "tuple":
            v = "(" + str(v) + ")" if v not in (None, "") else "auto"  # empty: the model family's choice
        elif p.kind == "float" and v is not None:
            v = repr(float(v))
        elif p.kind == "int" and isinstance(v, float) and v.is_integer():
            v = int(v)
        assignments.append(f"{p.name}={v}")
    return apply_overrides(default, assignments)


def param_id(method: str, name: str) -> str:
    """The elem id (and handler name) of the widget of ``method``'s config field ``name``."""
    return f"param-{method}-{name}"


def group_id(method: str) -> str:
    """The elem id (and handler name) of the group holding ``method``'s parameter widgets."""
    return f"params-{method}"


def gen_id(name: str) -> str:
    """The elem id (and handler name) of the Generate tab's widget of GenerationConfig field ``name``."""
    return f"gen-{name}"
