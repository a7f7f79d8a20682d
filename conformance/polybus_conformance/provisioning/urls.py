"""Adding query options to a broker URL, the way a test or a run mode needs it."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl


def with_options(url: str, options: Mapping[str, object]) -> str:
    """``url`` with ``options`` set in its query: an option already there is replaced
    (``polybus.connect`` refuses a name given twice), the others keep their text and
    order. Values are written as ``str(value)``; booleans as ``true``/``false``."""
    if not options:
        return url
    base, _, query = url.partition("?")
    kept = [pair for pair in query.split("&") if pair and pair.split("=", 1)[0] not in options]
    added = [f"{name}={_text(value)}" for name, value in options.items()]
    return f"{base}?{'&'.join(kept + added)}"


def parse_options(text: str) -> dict[str, str]:
    """``"a=1&b=2"`` as a dict; raises ValueError naming an item that is not
    ``NAME=VALUE``."""
    pairs: dict[str, str] = {}
    for item in text.split("&"):
        item = item.strip()
        if not item:
            continue
        if "=" not in item or not item.split("=", 1)[0]:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        name, value = next(iter(parse_qsl(item, keep_blank_values=True)))
        pairs[name] = value
    return pairs


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
