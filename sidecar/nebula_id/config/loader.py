"""The one way every setting of every process is read.

A setting is a `Field`: a name, a parser, and where it lives in the TOML file.
Its command-line flag is ``--name-with-dashes`` and its environment variable
``NEBULA_NAME``.  `Sources` looks a field up in the order flag, environment,
TOML file, and gives the value with the place it came from; `Sources.build`
parses every field of one concern and constructs that concern's frozen
dataclass, so a bad value fails at start-up with a message that names its
source (``--port``, ``NEBULA_PORT``, ``config.toml [app] port``).  Fields that
no source gives keep the dataclass's default.

The parsers accept text (flags, environment) and TOML values alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from nebula_id import errors

ENV_PREFIX = "NEBULA_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"

T = TypeVar("T")
V_co = TypeVar("V_co", covariant=True)
Parser = Callable[[object], V_co]
"""Raw value (flag or environment text, TOML value) -> the setting's value, or ValueError."""


# --- parsers: text (flag, env) or TOML value -> typed value ---------------------------


def text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def stripped(value: object) -> str:
    return text(value).strip()


def optional_text(value: object) -> str | None:
    return text(value).strip() or None


def integer(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(text(value).strip())
    except ValueError as e:
        raise ValueError(f"must be an integer, got {value!r}") from e


def number(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(text(value).strip())
    except ValueError as e:
        raise ValueError(f"must be a number, got {value!r}") from e


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def comma_list(value: object) -> tuple[str, ...]:
    """A comma list (flag, env, TOML string) or a TOML array of strings."""
    if isinstance(value, list | tuple):
        return tuple(text(item).strip() for item in value if text(item).strip())
    return tuple(part.strip() for part in text(value).split(",") if part.strip())


def path(value: object) -> pathlib.Path:
    if isinstance(value, os.PathLike):
        return pathlib.Path(value).expanduser()
    return pathlib.Path(text(value)).expanduser()


def blank_is_unset(parse: Parser[T]) -> Parser[T | None]:
    """`parse`, except that a blank text means "not given" (for values a chart may leave empty)."""

    def parse_or_none(value: object) -> T | None:
        if isinstance(value, str) and not value.strip():
            return None
        return parse(value)

    return parse_or_none


def choice(options: Sequence[str]) -> Parser[str]:
    def parse(value: object) -> str:
        chosen = text(value).strip().lower()
        if chosen not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return chosen

    return parse


def name_map(value: object) -> Mapping[str, str]:
    """``dc-a=dsn,dc-b=dsn`` or a TOML table ``{dc-a = "dsn"}``."""
    if isinstance(value, Mapping):
        return {str(k): text(v) for k, v in value.items()}
    result: dict[str, str] = {}
    for index, part in enumerate(comma_list(value), start=1):
        name, sep, item = part.partition("=")
        if not sep or not name.strip() or not item.strip():
            # Never the item itself: it may hold a password.
            raise ValueError(f"item {index} must be written as datacenter=dsn")
        result[name.strip()] = item.strip()
    return result


# --- fields and where their values come from --------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Field(Generic[V_co]):
    """One setting: its parser, the dataclass attribute it fills, its TOML keys, its help.

    Generic in the parsed value's type, so `Sources.value` returns that type.
    """

    name: str
    """The setting's name: flag ``--name-with-dashes``, environment ``NEBULA_NAME``."""
    parse: Parser[V_co]
    toml: tuple[str, ...] = ()
    """``section.key`` paths in the config file, the first found wins."""
    help: str = ""
    attr: str | None = None
    """The dataclass attribute; the name when None."""
    flag_name: str | None = None
    """The flag without its dashes when it is not the name (``namespaces`` for
    ``operator_namespaces``)."""
    secret: bool = False
    """A credential: never echoed, and without a flag where a process says so."""

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.name).replace("_", "-")

    @property
    def target(self) -> str:
        return self.attr or self.name


def add_arguments(
    parser: argparse.ArgumentParser,
    fields: Iterable[Field[object]],
    *,
    without_flag: Collection[str] = (),
) -> None:
    """One flag per field (all default to None, meaning "not given").

    `without_flag` names the fields a process takes only from its environment or
    file: a process's arguments are visible to every user of the machine.
    """
    for field in fields:
        if field.name in without_flag:
            continue
        parser.add_argument(
            field.flag,
            dest=field.name,
            default=None,
            metavar=(field.flag_name or field.name).upper(),
            help=f"{field.help} (env {field.env})",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Sources:
    """The flags, the environment and the config file of one process, in that order."""

    flags: Mapping[str, object] = dataclasses.field(default_factory=dict)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    toml: Mapping[str, object] = dataclasses.field(default_factory=dict)
    """The file as ``{"section.key": value}``."""
    toml_path: str | None = None

    def lookup(self, field: Field[object]) -> tuple[object, str] | None:
        """The raw value and the name of its source; None when no source gives it."""
        if self.flags.get(field.name) is not None:
            return self.flags[field.name], field.flag
        if self.env.get(field.env) is not None:
            return self.env[field.env], field.env
        for key in field.toml:
            if key in self.toml:
                section, _, name = key.partition(".")
                return self.toml[key], f"{self.toml_path} [{section}] {name}"
        return None

    def value(self, field: Field[T]) -> T | None:
        """The parsed value, or None when no source gives it."""
        found = self.lookup(field)
        if found is None:
            return None
        raw, source = found
        try:
            return field.parse(raw)
        except ValueError as e:
            raise errors.ConfigError(f"{source}: {e}") from e

    def values(self, fields: Iterable[Field[object]]) -> dict[str, Any]:
        """Attribute -> parsed value of every field some source gives.

        The values are `Any` because callers pass them on as keyword arguments to
        the concern's dataclass (`EtcdSettings(**values)`): each is its field
        parser's type, which no mapping type can state per key.
        """
        parsed: dict[str, Any] = {}
        for field in fields:
            value = self.value(field)
            if value is not None:
                parsed[field.target] = value
        return parsed

    def build(self, cls: Callable[..., T], fields: Iterable[Field[object]], **fixed: object) -> T:
        """One concern's settings: `fixed` values, then what the sources give, then defaults."""
        return cls(**{**fixed, **self.values(fields)})


def sources(
    flags: Mapping[str, object] | argparse.Namespace | None,
    env: Mapping[str, str] | None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    toml_fields: Iterable[Field[object]] = (),
    ignored_toml: Collection[str] = (),
) -> Sources:
    """The sources of one process; ``env=None`` means the process's own environment.

    The config file is `config_file`, else the ``--config`` flag, else
    ``NEBULA_CONFIG``; it is read only when the process has `toml_fields`.
    """
    given = dict(vars(flags) if isinstance(flags, argparse.Namespace) else (flags or {}))
    environ = os.environ if env is None else env
    toml_fields = tuple(toml_fields)
    location = config_file or given.get("config") or environ.get(CONFIG_ENV)
    if not location or not toml_fields:
        return Sources(flags=given, env=environ)
    file = pathlib.Path(location)
    return Sources(
        flags=given,
        env=environ,
        toml=read_toml(file, toml_fields, ignored=ignored_toml),
        toml_path=str(file),
    )


def read_toml(
    file: pathlib.Path, fields: Iterable[Field[object]], *, ignored: Collection[str] = ()
) -> dict[str, object]:
    """The file as ``{"section.key": value}``; an unknown key of one of our sections fails.

    Sections none of `fields` uses (the seed FAQ's ``[redis]``) are skipped, and so are
    the `ignored` keys (accepted for the seed's sake, unused).
    """
    try:
        document = tomllib.loads(file.read_text())
    except OSError as e:
        raise errors.ConfigError(f"config file {file} cannot be read: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise errors.ConfigError(f"config file {file} is not valid TOML: {e}") from e
    known = {key for field in fields for key in field.toml}
    sections = {key.split(".")[0] for key in known}
    flat: dict[str, object] = {}
    for section, table in document.items():
        if section not in sections:
            continue
        if not isinstance(table, Mapping):
            raise errors.ConfigError(f"{file}: [{section}] must be a table")
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if dotted in ignored:
                continue
            if dotted not in known:
                raise errors.ConfigError(f"{file}: unknown setting [{section}] {key}")
            flat[dotted] = value
    return flat
