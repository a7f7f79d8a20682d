"""Known defects of broker flavours that are not the product polybus targets.

``KNOWN_DEFECTS[flavour][test name]`` names the defect. The plugin marks exactly those
tests ``xfail(strict=True)`` for exactly that flavour: the assertion stays as strict as
everywhere else, and if the flavour gets fixed the strict xfail turns into a failure
that asks for the entry to be removed. Adapter engineers add their broker's entries;
each entry must name a defect of the broker (see BROKERS.md), never of polybus.
"""

from __future__ import annotations

KNOWN_DEFECTS: dict[str, dict[str, str]] = {
    "tansu": {},
    "pubsub-emulator": {},
    "moto": {},
}


def defect(flavour: str, test: str) -> str | None:
    """The named defect that makes ``test`` fail on ``flavour``, if one is known."""
    return KNOWN_DEFECTS.get(flavour, {}).get(test)
