"""``polybus conformance BACKEND [--url URL] [--report DIR]``: run the suite on a backend.

It runs pytest on the installed suite (``--pyargs polybus_conformance.suite``), so it
works from any directory, against a broker of the user's own when ``--url`` is given
(else ``POLYBUS_<BACKEND>_URL``, a container, or a local broker process).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from . import backends, report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backend", help=f"one of: {', '.join(backends.BACKENDS)}")
    parser.add_argument("--url", help="the broker to certify (default: provisioned)")
    parser.add_argument(
        "--report", type=Path, default=Path("reports"), help="directory for the matrix"
    )
    parser.add_argument(
        "--readme", type=Path, help="also regenerate the matrix block of this README"
    )
    parser.add_argument(
        "--tier",
        default="conformance",
        help="tiers to run, comma-separated: conformance, fault, operations",
    )
    parser.add_argument(
        "--pytest-args",
        default="",
        metavar="ARGS",
        help='further pytest arguments, one shell-quoted string (e.g. "-k order -x")',
    )


def run(args: argparse.Namespace) -> int:
    try:
        backends.check_backend(args.backend)
    except ValueError as exc:
        print(f"polybus conformance: {exc}")
        return 2
    argv = [
        # the plugin is never loaded by merely installing polybus: select it
        "-p",
        "polybus_conformance.plugin",
        "--pyargs",
        "polybus_conformance.suite",
        f"--polybus-backend={args.backend}",
        f"--polybus-report={args.report}",
        f"--polybus-tier={args.tier}",
        "-p",
        "no:cacheprovider",
    ]
    if args.url:
        argv.append(f"--polybus-url={args.url}")
    argv += shlex.split(args.pytest_args)
    # a fresh interpreter: pytest must import (and assert-rewrite) the suite and its
    # plugins itself, not find them half-imported by this command
    code = subprocess.call([sys.executable, "-m", "pytest", *argv])
    if args.readme is not None and code in (0, 1):
        data = json.loads((args.report / "conformance.json").read_text())
        report.update_readme(args.readme, data)
    return code
