"""``polybus brokers up BACKEND...`` / ``polybus brokers down [BACKEND...]`` / ``status``:
the suite's local broker launchers, for developers.

``up`` starts each broker on a free loopback port and prints the ``export`` lines that
point the suite and the examples at it; the brokers keep running after the command
exits. Their process ids, ports and log directories are kept in
``.polybus/brokers.json`` under the current directory; ``down`` stops them by id.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from . import backends
from .provisioning import LAUNCHERS, Unavailable

STATE_DIR = Path(".polybus")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("backends", nargs="*", help=f"any of: {', '.join(LAUNCHERS)}")
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR)


def run(args: argparse.Namespace) -> int:
    state_file = args.state_dir / "brokers.json"
    state = _load(state_file)
    if args.action == "up":
        code = _up(args.backends, args.state_dir, state)
    elif args.action == "down":
        code = _down(args.backends or list(state), state)
    else:
        for name, info in state.items():
            alive = any(_alive(pid) for pid in info["pids"])
            print(f"{name}: {'running' if alive else 'stopped'} {info['url']} logs {info['logs']}")
        code = 0
    args.state_dir.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(state, indent=2) + "\n")
    return code


def _load(state_file: Path) -> dict[str, Any]:
    try:
        data = json.loads(state_file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"polybus brokers: cannot read {state_file}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _up(names: list[str], state_dir: Path, state: dict[str, Any]) -> int:
    if not names:
        print("polybus brokers up: name at least one backend")
        return 2
    code = 0
    for name in names:
        launcher = LAUNCHERS.get(name)
        if launcher is None:
            print(f"{name}: no local launcher; choose from {', '.join(LAUNCHERS)}")
            code = 2
            continue
        if name in state and any(_alive(pid) for pid in state[name]["pids"]):
            print(f"{name}: already running at {state[name]['url']}")
            continue
        if launcher.find() is None:
            print(f"{name}: {launcher.program} is not installed")
            code = 1
            continue
        workdir = (state_dir / name).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            broker = launcher.start(workdir)
        except Unavailable as exc:
            print(f"{name}: failed to start: {exc}")
            code = 1
            continue
        broker.detach()  # it must outlive this command; `down` stops it
        state[name] = {
            "url": broker.url,
            "flavour": broker.flavour,
            "pids": list(broker.pids),
            "logs": str(workdir),
        }
        print(f"export {backends.url_env(name)}='{broker.url}'")
        print(f"export {backends.flavour_env(name)}={broker.flavour}")
    return code


def _down(names: list[str], state: dict[str, Any]) -> int:
    for name in names:
        info = state.pop(name, None)
        if info is None:
            print(f"{name}: not started by polybus brokers up")
            continue
        for pid in reversed(info["pids"]):
            _stop_group(pid)
        print(f"{name}: stopped (logs kept in {info['logs']})")
    return 0


def _stop_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL it if it outlives ``timeout``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True
