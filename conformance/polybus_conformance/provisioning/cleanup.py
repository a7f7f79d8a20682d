"""No orphaned brokers: a broker process started here never outlives this process.

Every local broker runs as the leader of its own process group (see ``base.Process``),
and is *tracked* here from start until it is stopped. Tracked groups are killed:

- at normal interpreter exit (``atexit``, registered with the first tracked group);
- on SIGTERM or SIGHUP, once :func:`install_signal_handlers` has been called (the pytest
  plugin does it for the session). The handler kills the tracked groups, then does what
  the previous handler would have done: call it, or, for the default action, die of the
  same signal. SIGINT is never touched (pytest's KeyboardInterrupt handling stays).

Nothing runs on SIGKILL, so a supervisor can ask for a record: when
``POLYBUS_BROKER_RECORD`` names a file, each group is appended to it as ``start PGID
NAME`` when started and ``stop PGID`` when stopped; a group started and never stopped is
one to kill (``.ci/run`` does so at its end).

A broker meant to outlive its starter (``polybus brokers up``) is :func:`untrack`-ed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType

RECORD_ENV = "POLYBUS_BROKER_RECORD"
SIGNALS = (signal.SIGTERM, signal.SIGHUP)

_lock = threading.Lock()
_tracked: dict[int, str] = {}
"""Process-group id -> name, for every broker group started and not yet stopped."""
_atexit_registered = False
_previous: dict[int, signal.Handlers | Callable[[int, FrameType | None], object] | int | None] = {}


def track(pgid: int, name: str) -> None:
    """Remember the process group ``pgid`` (a broker called ``name``) until untracked."""
    global _atexit_registered
    with _lock:
        _tracked[pgid] = name
        if not _atexit_registered:
            atexit.register(kill_tracked)
            _atexit_registered = True
    _record(f"start {pgid} {name.replace(' ', '_')}")


def untrack(pgid: int) -> None:
    """Forget ``pgid``: it was stopped, or it is meant to outlive this process."""
    with _lock:
        known = _tracked.pop(pgid, None)
    if known is not None:
        _record(f"stop {pgid}")


def tracked() -> dict[int, str]:
    """A copy of the tracked groups (process-group id -> name)."""
    with _lock:
        return dict(_tracked)


def kill_tracked() -> None:
    """SIGKILL every tracked process group and forget it.

    A last resort (exit or a fatal signal), so no grace period: a broker of a test run
    holds nothing worth a clean shutdown, and a slow stop would delay the exit.
    """
    with _lock:
        groups = list(_tracked)
        _tracked.clear()
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _record(f"stop {pgid}")


def install_signal_handlers(signals: Iterable[int] = SIGNALS) -> None:
    """Kill tracked brokers on ``signals`` (default SIGTERM and SIGHUP), then act as the
    previous handler would. Idempotent; a no-op outside the main thread, and for a
    signal whose previous handler ignores it (the process does not die of it then).

    Also re-installs over ``SIG_DFL``: asyncio's ``remove_signal_handler`` (used by code
    under test that handles SIGTERM itself) resets a signal to the default action.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in signals:
        current = signal.getsignal(sig)
        if current is _on_signal or current is signal.SIG_IGN:
            continue
        if current is not signal.SIG_DFL and sig in _previous:
            continue  # someone else's handler replaced ours: leave it alone
        _previous[sig] = current
        signal.signal(sig, _on_signal)


def restore_signal_handlers() -> None:
    """Put back the handlers :func:`install_signal_handlers` replaced (where ours is
    still installed)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in list(_previous.items()):
        if signal.getsignal(sig) is _on_signal:
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        del _previous[sig]


def _on_signal(signum: int, frame: FrameType | None) -> None:
    kill_tracked()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    # the default action: die of this very signal, so the exit status tells what happened
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _record(line: str) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    # one short O_APPEND write per line: safe with several writers (pytest and children)
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)
