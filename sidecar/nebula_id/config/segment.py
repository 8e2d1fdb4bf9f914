"""The standalone node's segment tags (in a cluster they are the pool's)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from nebula_id import errors
from nebula_id.config import loader
from nebula_id.core import tags as tags_mod


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentSettings:
    """The tags a standalone node serves."""

    tags: tuple[tags_mod.Tag, ...] = (tags_mod.Tag(name="default"),)
    """At least one, each name once."""

    def __post_init__(self) -> None:
        if not self.tags:
            raise errors.ConfigError("tags: must name at least one tag")
        names = [t.name for t in self.tags]
        for name in names:
            if names.count(name) > 1:
                raise errors.ConfigError(f"tags: tag {name!r} appears twice")


def parse_tags(value: object) -> tuple[tags_mod.Tag, ...]:
    """``name[:step[:maxStep]]`` comma list, or TOML tables ``{name, step, max_step}``."""
    items: list[object] = value if isinstance(value, list) else list(loader.comma_list(value))
    result: list[tags_mod.Tag] = []
    for item in items:
        if isinstance(item, Mapping):
            name = loader.text(item.get("name", ""))
            step = loader.integer(item.get("step", tags_mod.DEFAULT_STEP))
            max_step = loader.integer(item.get("max_step", tags_mod.default_max_step(step)))
        else:
            parts = loader.text(item).strip().split(":")
            if len(parts) > 3:
                raise ValueError(f"tag {item!r} must be name[:step[:maxStep]]")
            name = parts[0]
            step = loader.integer(parts[1]) if len(parts) > 1 else tags_mod.DEFAULT_STEP
            max_step = (
                loader.integer(parts[2]) if len(parts) > 2 else tags_mod.default_max_step(step)
            )
        try:
            tag = tags_mod.Tag(name=name, step=step, max_step=max_step)
        except errors.InvalidArgument as e:
            raise ValueError(f"tag {name!r}: {e.message}") from e
        if any(t.name == tag.name for t in result):
            raise ValueError(f"tag {name!r} appears twice")
        result.append(tag)
    if not result:
        raise ValueError("must name at least one tag")
    return tuple(result)


FIELDS: tuple[loader.Field[object], ...] = (
    loader.Field(
        "tags", parse_tags, ("segment.tags",), "standalone tags: name[:step[:maxStep]],..."
    ),
)
IGNORED_TOML = frozenset({"algorithm.segment"})
"""A key of the seed's config.toml that is accepted and not used."""
