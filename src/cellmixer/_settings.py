"""Settings dataclasses: the one home of every default, its range and its help.

A field made by :func:`setting` carries its help text and its allowed values. From that one
declaration come the keyword defaults of the Python function (:func:`takes_settings`), the
command-line option (``cli._options.add_settings``) and the range check, the same for both
(:func:`check_settings`), with messages that name the option as the user typed it.

>>> from dataclasses import dataclass
>>> @dataclass
... class Window:
...     overlap: float = setting(0.25, "share of a tile seen by its neighbour", at_least=0, at_most=0.9)
>>> check_settings(Window(overlap=2.0))
Traceback (most recent call last):
...
cellmixer._errors.CellmixerError: --overlap 2.0: must be between 0 and 0.9.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import numbers

from ._errors import CellmixerError

_KEY = "cellmixer"
_GIVEN = "_given_settings"  # attribute of a settings object: the names its maker was given


def setting(default, help: str = "", *, at_least=None, above=None, at_most=None, below=None, choices=None,
            flag: str | tuple | None = None, metavar=None, cli: bool = True, nargs=None, kind=None, check=None,
            parse=None):
    """A dataclass field with its help and allowed values.

    Parameters
    ----------
    default :
        The default; a list or dict default is copied for each instance.
    help : str
        One line for ``--help`` (the default is appended there).
    at_least, above, at_most, below : number, optional
        Bounds of a number (each element of a tuple); NaN and infinity are always refused.
    choices : sequence, optional
        The allowed values.
    flag : str or tuple of str, optional
        The option's name when it is not ``--field-name`` (``'--no-augment'`` for a default-True flag),
        or its names (``('--number', '-n')``).
    metavar, nargs :
        As in :mod:`argparse`.
    cli : bool
        False: a setting of the Python function only (no command-line option).
    kind : type, optional
        The type of the value (default: the type of ``default``), e.g. ``float`` for a default of 0.
    check : callable, optional
        ``check(value)`` returns what the value must be (e.g. ``'choose li, otsu or a number'``) or
        None when it is fine: for values that the declarations above cannot describe.
    parse : callable, optional
        Turns the command-line text into the value (an :mod:`argparse` ``type``).
    """
    meta = {_KEY: dict(help=help, at_least=at_least, above=above, at_most=at_most, below=below, choices=choices,
                       flag=flag, metavar=metavar, cli=cli, nargs=nargs, kind=kind, check=check, parse=parse)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_like(cls, name: str, default, **changes):
    """The declaration of field ``name`` of ``cls`` with another default (and other ``changes``),
    for a subclass that changes a default without repeating its help and range."""
    declared = {**spec(field_of(cls, name)), **changes}
    return setting(default, declared.pop("help"), **declared)


def spec(field: dataclasses.Field) -> dict:
    """The :func:`setting` declaration of ``field`` (empty values for a plain field)."""
    return field.metadata.get(_KEY, {"help": "", "cli": False})


def field_of(cls, name: str) -> dataclasses.Field:
    """The field ``name`` of the dataclass ``cls`` (to check one value with :func:`check_value`)."""
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def default_of(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def flags_of(field: dataclasses.Field) -> tuple[str, ...]:
    """The option strings that set ``field``: ``('--crop-size',)`` for ``crop_size``, or its ``flag``
    (one string, or several: ``('--number', '-n')``)."""
    flag = spec(field).get("flag") or "--" + field.name.replace("_", "-")
    return (flag,) if isinstance(flag, str) else tuple(flag)


def flag_of(field: dataclasses.Field) -> str:
    """The option that sets ``field`` (its first option string): ``--crop-size`` for ``crop_size``."""
    return flags_of(field)[0]


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _need(s: dict) -> str | None:
    lo, lo_open = (s["above"], True) if s.get("above") is not None else (s.get("at_least"), False)
    hi, hi_open = (s["below"], True) if s.get("below") is not None else (s.get("at_most"), False)
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f"must be between {_fmt(lo)} and {_fmt(hi)}"
        return f"must be in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        if lo_open:
            return "must be positive" if lo == 0 else f"must be more than {_fmt(lo)}"
        return f"must be at least {_fmt(lo)}"
    if hi is not None:
        return f"must be below {_fmt(hi)}" if hi_open else f"must be at most {_fmt(hi)}"
    return None


def _out_of_range(value, s: dict) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if not math.isfinite(value):
        return True
    return ((s.get("at_least") is not None and value < s["at_least"]) or
            (s.get("above") is not None and value <= s["above"]) or
            (s.get("at_most") is not None and value > s["at_most"]) or
            (s.get("below") is not None and value >= s["below"]))


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def check_value(field: dataclasses.Field, value, *, key: str | None = None) -> None:
    """Refuse a value outside the field's type, choices or range, naming its option (or, for a value
    read from a file, its ``key`` there: ``"input_scale" is "half": give a number.``)."""
    s = spec(field)
    flag = flag_of(field) if not flag_of(field).startswith("--no-") else "--" + field.name.replace("_", "-")

    def bad(need: str):
        if key is not None:
            raise CellmixerError(f"\"{key}\" is {json.dumps(value, default=str)}: {need}.")
        joined = "" if flag.endswith("=") else " "  # --model-option KEY=VALUE
        raise CellmixerError(f"{flag}{joined}{_shown(value)}: {need}.")

    default = default_of(field)
    kind = s.get("kind") or (type(default) if default is not None else None)
    if s.get("check") is not None:
        need = s["check"](value)
        if need:
            bad(need)
        return
    if value is None:  # "not given": the setting is optional (its default is None) or filled in later
        return
    if kind is bool and not isinstance(value, bool):
        bad("give true or false")
    if s.get("kind") is str and not isinstance(value, str):  # declared text (a text default alone may allow more)
        bad("give a text")
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            bad(f"give {len(default)} values")
        if s.get("nargs") is None and len(value) != len(default):
            bad(f"give {len(default)} values")
    values = value if isinstance(value, (tuple, list)) else [value]
    element = type(default[0]) if isinstance(default, (tuple, list)) and default else kind
    for v in values:
        if element in (int, float) and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            bad("give a number" if element is float else "give a whole number")
        if element is int and not isinstance(v, numbers.Integral) and not float(v).is_integer():
            bad("give a whole number")
    if s.get("choices") is not None and value not in s["choices"]:
        bad(f"choose one of {', '.join(map(str, s['choices']))}")
    for v in values:
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isfinite(v):
            bad("must be a finite number")
        if _out_of_range(v, s):
            bad(_need(s))


def check_settings(settings) -> None:
    """Check every field of a settings dataclass against its declaration."""
    for field in dataclasses.fields(settings):
        check_value(field, getattr(settings, field.name))


def check_mapping(cls, mapping, *, key: str, required: bool = False) -> None:
    """Check a dict read from a file (``config.json``, a checkpoint) against the fields of the settings
    dataclass ``cls``: it is a dict, has no other keys (and, if ``required``, all of them), and each
    value is allowed; errors name the key (``"training.batch_size" is "8": give a whole number.``)."""
    if not isinstance(mapping, dict):
        raise CellmixerError(f"\"{key}\" is {json.dumps(mapping, default=str)[:60]}: give an object of settings.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise CellmixerError(f"\"{key}.{unknown[0]}\": no such setting; the known ones are {', '.join(fields)}.")
    missing = [name for name in fields if name not in mapping]
    if required and missing:
        raise CellmixerError(f"\"{key}.{missing[0]}\" is missing.")
    for name, value in mapping.items():
        check_value(fields[name], value, key=f"{key}.{name}")


def settings_from(cls, options: dict, *, function: str = ""):
    """``cls(**options)``, refusing names that are not its fields as Python would; the names given
    are remembered (:func:`given_settings`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"{function or cls.__name__}() got an unexpected keyword argument {unknown[0]!r}")
    settings = cls(**options)
    object.__setattr__(settings, _GIVEN, frozenset(options))
    return settings


def given_settings(settings) -> frozenset:
    """The fields of ``settings`` that were given rather than left at their defaults: the names
    passed to :func:`settings_from`, else those whose value is not the default."""
    given = getattr(settings, _GIVEN, None)
    if given is not None:
        return given
    return frozenset(f.name for f in dataclasses.fields(settings) if getattr(settings, f.name) != default_of(f))


def takes_settings(*classes):
    """Decorator of a function ``f(..., **settings)``: the fields of ``classes`` become its keyword
    parameters, with the dataclasses' defaults, in :func:`inspect.signature` and ``help()``; a
    keyword that is neither a parameter of ``f`` nor a field is a TypeError, as for any function."""

    def decorate(function):
        signature = inspect.signature(function)
        params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        own = {p.name for p in params}
        added, seen = [], set(own)
        for cls in classes:
            for f in dataclasses.fields(cls):
                if f.name in seen:
                    continue
                seen.add(f.name)
                added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default_of(f),
                                               annotation=f.type))
        keyword_only = [p for p in params if p.kind is p.KEYWORD_ONLY]
        positional = [p for p in params if p.kind is not p.KEYWORD_ONLY]
        new_signature = signature.replace(parameters=[*positional, *keyword_only, *added])

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            unknown = sorted(set(kwargs) - seen)
            if unknown:
                raise TypeError(f"{function.__name__}() got an unexpected keyword argument {unknown[0]!r}")
            return function(*args, **kwargs)

        wrapper.__signature__ = new_signature
        wrapper.settings_classes = classes
        return wrapper

    return decorate


def split_settings(options: dict, cls) -> tuple[dict, dict]:
    """``options`` split into the fields of ``cls`` (with their defaults filled in) and the rest."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    mine = {name: options.get(name, default_of(f)) for name, f in names.items()}
    rest = {k: v for k, v in options.items() if k not in names}
    return mine, rest
