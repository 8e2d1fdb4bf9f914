"""How a process logs: its level and format."""

from __future__ import annotations

import dataclasses

from nebula_id import errors, logs
from nebula_id.config import loader

LEVELS = ("debug", "info", "warning", "error")


@dataclasses.dataclass(frozen=True, slots=True)
class LogSettings:
    """The log level and format of one process."""

    level: str = "info"
    """debug, info, warning or error."""
    format: str = "text"
    """text, or one JSON object per line."""

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise errors.ConfigError(f"log_level must be one of {', '.join(LEVELS)}")
        if self.format not in logs.FORMATS:
            raise errors.ConfigError(f"log_format must be one of {', '.join(logs.FORMATS)}")


FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field("log_level", loader.choice(LEVELS), ("app.log_level",), "log level",
                 attr="level"),
    loader.Field(
        "log_format", loader.choice(logs.FORMATS), ("app.log_format",), "text, or json lines",
        attr="format",
    ),
)  # fmt: skip
