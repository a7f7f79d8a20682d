"""The pytest plugin that runs the conformance suite. Installing polybus does not load it:
a project selects it with ``-p polybus_conformance.plugin`` (``polybus conformance BACKEND``
does), and only then does it add its options, fixtures (all named ``polybus_*``) and
reports.

Options: ``--polybus-backend=NAME[,NAME...]`` (or the ini list ``polybus_backends``;
default ``memory``), ``--polybus-url`` (one backend only; else ``POLYBUS_<BACKEND>_URL``
or provisioning), ``--polybus-url-options=NAME=VALUE[&...]`` (query options set on the
selected backends' broker URLs, e.g. ``fifo=true`` to certify SQS in FIFO mode),
``--polybus-tier=TIER[,TIER...]`` (or the ini list ``polybus_tiers``; default
``conformance``, see :mod:`.tiers`) and ``--polybus-report=DIR`` (default ``reports``).
Fault-tier tests run against their own restartable brokers (:mod:`.restartable`).

Tests that take the ``polybus_backend`` argument are parametrized once per selected
backend (ids like ``[kafka]``). Before each such test, in this one place, the plugin
provides the broker (skip, or fail when ``POLYBUS_REQUIRE`` names the backend), skips
a test whose declared needs the backend's ``Capabilities`` lack, and marks a test
``xfail(strict=True)`` when the broker's flavour has a known defect for it. Every
result goes into the guarantee matrix, written at the end of the session.

Brokers are provided once per session (:func:`session_broker`, which the adapter tests
share) and stopped at its end; if the session is ended by SIGTERM or SIGHUP instead, or
exits without reaching its end, ``provisioning.cleanup`` kills them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

try:
    import pytest_asyncio
except ImportError as exc:  # the suite's extra is missing: say which
    raise ImportError(
        "the polybus conformance suite needs pytest-asyncio: pip install 'polybus[conformance]'"
    ) from exc

import polybus
from polybus.config import redact

from . import backends, defects, markers, operations, report, restartable, tiers
from .fixtures import BusFactory, Names, Target
from .provisioning import Broker, Unavailable, cleanup, provision
from .provisioning.urls import parse_options, with_options
from .timing import profile

ARG = "polybus_backend"


@dataclass
class _State:
    backends: list[str]
    url: str | None
    url_options: dict[str, str]
    report_dir: Path
    workdir: Path
    brokers: dict[str, Broker] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    items: dict[str, tuple[str, str]] = field(default_factory=dict)
    matrix: report.Matrix = field(default_factory=report.Matrix)


_STATE = pytest.StashKey[_State]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("polybus", "polybus conformance suite")
    group.addoption(
        "--polybus-backend",
        action="append",
        default=[],
        metavar="NAME[,NAME...]",
        help=f"backends to certify: {', '.join(backends.BACKENDS)} (default: ini "
        "polybus_backends, else memory)",
    )
    group.addoption(
        "--polybus-url",
        default=None,
        help="broker URL for the (single) selected backend; default POLYBUS_<BACKEND>_URL "
        "or a provisioned broker",
    )
    group.addoption(
        "--polybus-url-options",
        default=None,
        metavar="NAME=VALUE[&...]",
        help="query options added to the broker URL of each selected backend (replacing "
        "the same names), e.g. fifo=true",
    )
    group.addoption(
        "--polybus-report",
        default=None,
        metavar="DIR",
        help="where conformance.json and conformance.md are written (default: reports)",
    )
    parser.addini("polybus_backends", "backends the conformance suite certifies", type="args")
    tiers.addoption(parser, group)


def _selected(config: pytest.Config) -> list[str]:
    given: list[str] = config.getoption("--polybus-backend") or config.getini("polybus_backends")
    names = [n.strip() for item in given for n in item.split(",") if n.strip()] or ["memory"]
    try:
        for name in names:
            backends.check_backend(name)
    except ValueError as exc:
        raise pytest.UsageError(f"--polybus-backend: {exc}") from None
    return list(dict.fromkeys(names))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{markers.MARKER}(*capabilities): capabilities the backend must have"
    )
    selected = _selected(config)
    url = config.getoption("--polybus-url")
    if url and len(selected) != 1:
        raise pytest.UsageError("--polybus-url needs exactly one --polybus-backend")
    try:
        url_options = parse_options(config.getoption("--polybus-url-options") or "")
    except ValueError as exc:
        raise pytest.UsageError(f"--polybus-url-options: {exc}") from None
    given_dir = config.getoption("--polybus-report")
    report_dir = Path(given_dir or config.invocation_params.dir / "reports")
    state = _State(
        backends=selected,
        url=url,
        url_options=url_options,
        report_dir=report_dir,
        workdir=report_dir / "brokers",  # broker logs are kept beside the matrix
    )
    config.stash[_STATE] = state
    tiers.configure(config)
    restartable.configure(config, state.workdir, url_given=bool(url))
    operations.configure(config, state.workdir, lambda backend: _target(state, backend))
    config.pluginmanager.register(_Recorder(state), "polybus-conformance-recorder")
    # brokers die with the session, even when it is ended by SIGTERM (CI's `timeout`)
    cleanup.install_signal_handlers()


def pytest_unconfigure(config: pytest.Config) -> None:
    cleanup.restore_signal_handlers()


def pytest_runtest_logfinish() -> None:
    # code under test may have reset SIGTERM to the default (asyncio's
    # remove_signal_handler does): put the broker cleanup back
    cleanup.install_signal_handlers()


def pytest_report_header(config: pytest.Config) -> str:
    backends_line = ", ".join(config.stash[_STATE].backends)
    return f"polybus conformance backends: {backends_line}; tiers: {', '.join(tiers.of(config))}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if ARG in metafunc.fixturenames:
        names = metafunc.config.stash[_STATE].backends
        metafunc.parametrize(ARG, names, ids=names)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = config.stash[_STATE]
    tiers.deselect(config, items, lambda item: _backend_of(item) is not None)
    for item in items:
        backend = _backend_of(item)
        if backend is None:
            continue
        name = getattr(item, "originalname", item.name)
        doc = getattr(getattr(item, "function", None), "__doc__", None) or ""
        summary = " ".join(doc.strip().split("\n\n")[0].split())
        state.items[item.nodeid] = (name, backend)
        state.matrix.add_test(name, summary)


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None or ARG not in callspec.params:
        return None
    return str(callspec.params[ARG])


def session_broker(config: pytest.Config, backend: str) -> Broker:
    """The session's broker for ``backend``: provided on first use, then the same one
    for the rest of the run (the conformance suite and the adapter tests share it), and
    stopped at the end of the session. Raises :class:`Unavailable` with the reason (the
    same reason again on every later call)."""
    if _STATE not in config.stash:
        raise Unavailable("the polybus pytest plugin is not configured")
    return _broker(config.stash[_STATE], backend)


def _broker(state: _State, backend: str) -> Broker:
    """The broker for ``backend``, provided once per session (failures remembered)."""
    if backend in state.failures:
        raise Unavailable(state.failures[backend])
    found = state.brokers.get(backend)
    if found is None:
        if state.url and state.backends == [backend]:
            flavour = backends.explicit_flavour(backend)
            found = Broker(backend, state.url, flavour, "url")
        else:
            try:
                found = provision(backend, state.workdir)
            except Unavailable as exc:
                state.failures[backend] = str(exc)
                raise
            except Exception as exc:
                state.failures[backend] = f"starting a {backend} broker failed: {exc!r}"
                raise Unavailable(state.failures[backend]) from exc
        if state.url_options and backend in state.backends:
            # set on the shared broker itself: one run certifies one mode of the broker
            found.url = with_options(found.url, state.url_options)
        state.brokers[backend] = found
    return found


def _target(state: _State, backend: str) -> Target:
    found = state.targets.get(backend)
    if found is None:
        broker = _broker(state, backend)
        # recorded here, not in _broker: only backends the suite certifies are listed
        state.matrix.backends[backend] = _legend(broker)
        capabilities = polybus.connect(broker.url).capabilities  # parses only, no I/O
        found = state.targets[backend] = Target(backend, broker, capabilities, profile(backend))
    return found


def _legend(broker: Broker) -> dict[str, str]:
    return {"url": redact(broker.url), "flavour": broker.flavour, "origin": broker.origin}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    backend = _backend_of(item)
    if backend is not None:
        _gate(item, backend)
    return (yield)


def _gate(item: pytest.Item, backend: str) -> None:
    """Provide the broker, then skip or mark the test. The only place tests are skipped."""
    state = item.config.stash[_STATE]
    if tiers.tier_of(item) == "fault":
        # its own restartable broker, never the shared one (which need not even start)
        fault_target = restartable.gate(item, backend)
        if fault_target is None:
            return
        target = fault_target
        state.matrix.backends.setdefault(backend, _legend(target.broker))
    else:
        try:
            target = _target(state, backend)
        except Unavailable as exc:
            if backends.required(backend):
                pytest.fail(f"{backend} is required ({backends.REQUIRE_ENV}) but: {exc}")
            item.add_marker(pytest.mark.skip(reason=str(exc).splitlines()[0]))
            return
    wanted = tuple(w for mark in item.iter_markers(markers.MARKER) for w in mark.args)
    lacking = markers.missing(target.capabilities, backend != "memory", wanted)
    if lacking:
        item.add_marker(pytest.mark.skip(reason=markers.skip_reason(lacking)))
        return
    name = getattr(item, "originalname", item.name)
    known = defects.defect(target.flavour, name)
    if known:
        item.add_marker(pytest.mark.xfail(strict=True, reason=f"{target.flavour}: {known}"))
        return
    racy = defects.intermittent(target.flavour, name)
    if racy:
        item.add_marker(
            pytest.mark.xfail(strict=False, reason=f"{target.flavour} (intermittent): {racy}")
        )


class _Recorder:
    """Feeds every report of a conformance test into the matrix (a per-session plugin
    object, because ``pytest_runtest_logreport`` receives no config)."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        found = self.state.items.get(report.nodeid)
        if found is not None:
            self.state.matrix.record(found[0], found[1], report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash[_STATE]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if state.matrix.ordered():
        json_path, md_path = state.matrix.write(state.report_dir)
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"polybus conformance matrix: {md_path} and {json_path}")
    # every broker is stopped even if one of them fails to stop
    problems = []
    for backend, broker in state.brokers.items():
        try:
            broker.stop()
        except Exception as exc:
            problems.append(f"{backend}: {exc}")
    state.brokers.clear()
    problems += restartable.stop_all(session.config)
    problems += operations.stop_all(session.config)
    if problems:
        raise RuntimeError("stopping the session's brokers failed: " + "; ".join(problems))


@pytest.fixture
def polybus_target(polybus_backend: str, request: pytest.FixtureRequest) -> Target:
    """The backend under test (broker URL, flavour, capabilities, timing profile)."""
    return _target(request.config.stash[_STATE], polybus_backend)


@pytest_asyncio.fixture
async def polybus_bus_factory(polybus_target: Target) -> AsyncIterator[BusFactory]:
    """Opens fresh buses to the target broker; all are closed after the test."""
    # memory:// runs are isolated: each test gets a broker of its own
    factory = BusFactory(polybus_target, isolated=polybus_target.backend == "memory")
    try:
        yield factory
    finally:
        await factory.close_all()


@pytest_asyncio.fixture
async def polybus_bus(polybus_bus_factory: BusFactory) -> polybus.Bus:
    """One open bus to the target broker."""
    return await polybus_bus_factory()


@pytest.fixture
def polybus_names(request: pytest.FixtureRequest) -> Names:
    """Unique topic and group names for this test."""
    return Names(getattr(request.node, "originalname", request.node.name))
