"""``polybus bench BACKEND``: the SDK and the backend's raw client, side by side.

The raw baseline comes from ``polybus_<backend>.bench.raw_baseline()`` (see
:class:`polybus.bench.RawBaseline`). The URL is ``--url``, else ``POLYBUS_<BACKEND>_URL``,
else (for ``memory`` only) a private ``memory://`` broker.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import uuid

from ..config import redact
from ..errors import PolybusError
from . import RawBaseline
from .harness import Plan, compare
from .sdk import CONSUME_APIS, SdkSide


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``bench`` options on ``parser``."""
    parser.add_argument("backend", help="memory, kafka, rabbitmq, sqs, pubsub, nats or redis")
    parser.add_argument("--url", help="broker URL (default: POLYBUS_<BACKEND>_URL)")
    parser.add_argument("--messages", type=_positive, default=20_000, help="per round")
    parser.add_argument("--rounds", type=_positive, default=5, help="rounds per side")
    parser.add_argument("--size", type=_positive, default=1024, help="body bytes (1 KiB)")
    parser.add_argument("--batch", type=_positive, default=100, help="messages per publish")
    parser.add_argument(
        "--latency-samples", type=int, default=200, help="round trips per round (0: none)"
    )
    parser.add_argument(
        "--max-in-flight", type=_positive, default=256, help="SDK subscription window"
    )
    parser.add_argument(
        "--consume-api",
        choices=CONSUME_APIS,
        default="each",
        help="SDK consume loop: get + ack per message (each) or get_many + ack_many (batch)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args``; 0 on success, 2 on a usage error."""
    backend = str(args.backend).lower()
    url = args.url or os.environ.get(f"POLYBUS_{backend.upper()}_URL")
    if not url:
        if backend != "memory":
            return _fail(f"no URL for {backend}: pass --url or set POLYBUS_{backend.upper()}_URL")
        url = f"memory://bench-{uuid.uuid4().hex[:8]}"
    try:
        raw = load_baseline(backend)
        plan = Plan(
            messages=args.messages,
            rounds=args.rounds,
            size=args.size,
            batch=args.batch,
            latency_samples=args.latency_samples,
            warmup_messages=min(1_000, args.messages),
        )
        sdk = SdkSide(args.max_in_flight, args.consume_api)
        report = asyncio.run(compare(backend, url, sdk, raw, plan))
    except (PolybusError, ValueError) as exc:
        return _fail(f"bench {backend} on {redact(url)} failed: {exc}")
    print(json.dumps(report.as_json(), indent=2) if args.json else report.as_text())
    return 0


def load_baseline(backend: str) -> RawBaseline:
    """The raw baseline of ``backend`` (from ``polybus_<backend>.bench``)."""
    module_name = f"polybus_{backend}.bench"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"no raw baseline for {backend!r}: {module_name} is missing") from exc
    factory = getattr(module, "raw_baseline", None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no raw_baseline() function")
    baseline: RawBaseline = factory()
    return baseline


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fail(problem: str) -> int:
    print(f"polybus: {problem}", file=sys.stderr)
    return 2
