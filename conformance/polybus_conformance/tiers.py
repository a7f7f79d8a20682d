"""Test tiers: ``conformance`` (every CI run), ``fault`` (broker restart, consumer killed),
and ``operations`` (network cut and stall through a TCP proxy, consumer churn,
scale-out, foreign messages both ways, replay isolation, memory:// fidelity).

A suite test belongs to the tier named by its marker (``@pytest.mark.fault``,
``@pytest.mark.operations``), else to ``conformance``. A run
selects tiers with ``--polybus-tier=conformance,fault`` or the ini list
``polybus_tiers``; the default is ``conformance`` only, because the other tiers stop and
start brokers, cut networks and take longer. Tests
of tiers not selected are deselected (they do not appear in the matrix at all), so a
matrix never shows a fault row as skipped merely because the tier was off.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

TIERS = ("conformance", "fault", "operations")
DEFAULT = ("conformance",)
MARKERS = {
    "fault": "fault tier: broker restart, consumer killed; runs only when the selected "
    "polybus tiers include fault (--polybus-tier=conformance,fault)",
    "operations": "operations tier: network faults through a TCP proxy, churn, scale-out, "
    "foreign messages, replay isolation; runs only when the selected polybus tiers include "
    "operations",
}


_SELECTED = pytest.StashKey[tuple[str, ...]]()


def addoption(parser: pytest.Parser, group: pytest.OptionGroup) -> None:
    group.addoption(
        "--polybus-tier",
        action="append",
        default=[],
        metavar="TIER[,TIER...]",
        help=f"suite tiers to run: {', '.join(TIERS)} (default: ini polybus_tiers, else "
        "conformance)",
    )
    parser.addini("polybus_tiers", "conformance suite tiers to run", type="args")


def configure(config: pytest.Config) -> None:
    """Register the tier markers and remember the selected tiers."""
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.stash[_SELECTED] = selected(config)


def of(config: pytest.Config) -> tuple[str, ...]:
    """The tiers this run selected."""
    return config.stash[_SELECTED]


def deselect(
    config: pytest.Config, items: list[pytest.Item], in_suite: Callable[[pytest.Item], bool]
) -> None:
    """Deselect (in place) the suite tests of tiers this run did not select; other
    tests (``in_suite`` false: unit tests without a backend) are left alone."""
    wanted = of(config)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if in_suite(item) and tier_of(item) not in wanted else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def selected(config: pytest.Config) -> tuple[str, ...]:
    """The tiers named by ``--polybus-tier`` (comma-separated, repeatable), else by the
    ini list ``polybus_tiers``, else :data:`DEFAULT`."""
    given: list[str] = config.getoption("--polybus-tier") or config.getini("polybus_tiers")
    names = [n.strip() for item in given for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in TIERS]
    if unknown:
        raise pytest.UsageError(
            f"--polybus-tier: unknown tier {unknown[0]!r}; expected any of: {', '.join(TIERS)}"
        )
    return tuple(dict.fromkeys(names)) or DEFAULT


def tier_of(item: pytest.Item) -> str:
    """The tier a collected test belongs to."""
    for name in ("fault", "operations"):
        if item.get_closest_marker(name) is not None:
            return name
    return "conformance"
