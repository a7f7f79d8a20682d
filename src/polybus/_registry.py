"""The adapter registry: URL scheme -> adapter class, through entry points."""

from __future__ import annotations

from importlib.metadata import entry_points

from .errors import ConfigError
from .spi import Adapter

GROUP = "polybus.adapters"

_extra: dict[str, type[Adapter]] = {}


def register(scheme: str, adapter: type[Adapter]) -> None:
    """Register ``adapter`` for ``scheme`` in this process (entry points are preferred:
    they need no import-time side effects)."""
    _extra[scheme.lower()] = adapter


def schemes() -> list[str]:
    """Every URL scheme an installed adapter serves."""
    return sorted({ep.name for ep in entry_points(group=GROUP)} | set(_extra))


def load(scheme: str) -> type[Adapter]:
    """The adapter class serving ``scheme``; ConfigError if none is installed."""
    scheme = scheme.lower()
    if scheme in _extra:
        return _extra[scheme]
    for ep in entry_points(group=GROUP, name=scheme):
        try:
            cls = ep.load()
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                "url",
                f"the adapter for {scheme}:// cannot be imported ({exc}); "
                f"install its extra, e.g. pip install 'polybus[{ep.name}]'",
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ConfigError("url", f"entry point {ep.value} is not a polybus Adapter")
        return cls
    known = ", ".join(f"{s}://" for s in schemes()) or "none"
    raise ConfigError("url", f"no adapter for scheme {scheme}:// (installed: {known})")
