"""``polybus bench BACKEND``: the SDK and the backend's raw client, side by side.

The raw baseline comes from ``polybus_<backend>.bench.raw_baseline()`` (see
:class:`polybus.bench.RawBaseline`). The URL is ``--url``, else ``POLYBUS_<BACKEND>_URL``,
else (for ``memory`` only) a private ``memory://`` broker. With ``--handler-ms`` it compares
instead a Worker's throughput in an unordered and a key-ordered group whose handler awaits
that long (see :mod:`polybus.bench.ordering`). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

from ..config import redact
from ..errors import PolybusError
from . import RawBaseline
from .harness import Plan, compare
from .ordering import compare_orderings
from .ordering import report as ordering_report
from .sdk import CONSUME_APIS, SdkSide


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``bench`` options on ``parser``."""
    parser.add_argument("backend", help="memory, kafka, rabbitmq, sqs, pubsub, nats or redis")
    parser.add_argument("--url", help="broker URL (default: POLYBUS_<BACKEND>_URL)")
    parser.add_argument("--messages", type=_positive, default=20_000, help="per round")
    parser.add_argument("--rounds", type=_positive, default=5, help="rounds per side")
    parser.add_argument("--size", type=_positive, default=1024, help="body bytes (1 KiB)")
    parser.add_argument(
        "--batch", type=_positive, default=500, help="messages per publish_many batch"
    )
    parser.add_argument(
        "--singles",
        type=int,
        help="messages published one awaited publish at a time per round "
        "(default: --messages, at most 1000; 0 skips)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=500,
        help="publishes in flight at once in the concurrent phase (0 skips)",
    )
    parser.add_argument(
        "--latency-samples", type=int, default=200, help="round trips per round (0: none)"
    )
    parser.add_argument(
        "--max-in-flight", type=_positive, default=256, help="SDK subscription window"
    )
    parser.add_argument(
        "--consume-api",
        choices=CONSUME_APIS,
        default="worker",
        help="SDK consumer: a Worker (worker), get + ack per message (each) or "
        "get_many + ack_many (batch)",
    )
    parser.add_argument(
        "--handler-ms",
        type=float,
        help="compare ordering none and key with a Worker whose handler awaits MS ms",
    )
    parser.add_argument(
        "--keys", type=_positive, default=4, help="distinct keys (with --handler-ms)"
    )
    parser.add_argument(
        "--raw-variant",
        help="another form of the raw baseline, where the backend has one "
        "(rabbitmq: quorum, the default and the SDK's queue type, or classic)",
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
    if args.handler_ms is not None:
        return _orderings(backend, url, args)
    try:
        raw = load_baseline(backend, args.raw_variant)
        plan = Plan(
            messages=args.messages,
            rounds=args.rounds,
            size=args.size,
            batch=args.batch,
            latency_samples=args.latency_samples,
            warmup_messages=min(1_000, args.messages),
            singles=min(args.messages, 1_000) if args.singles is None else args.singles,
            concurrency=args.concurrency,
        )
        sdk = SdkSide(args.max_in_flight, args.consume_api)
        with _progress() as progress:
            report = asyncio.run(compare(backend, url, sdk, raw, plan, progress))
    except (PolybusError, ValueError) as exc:
        return _fail(f"bench {backend} on {redact(url)} failed: {exc}")
    print(json.dumps(report.as_json(), indent=2) if args.json else report.as_text())
    return 0


def _orderings(backend: str, url: str, args: argparse.Namespace) -> int:
    try:
        with _progress() as progress:
            results = asyncio.run(
                compare_orderings(
                    url,
                    messages=args.messages,
                    keys=args.keys,
                    handler_ms=args.handler_ms,
                    max_in_flight=args.max_in_flight,
                    progress=progress,
                )
            )
    except (PolybusError, ValueError, RuntimeError) as exc:
        return _fail(f"bench {backend} on {redact(url)} failed: {exc}")
    if args.json:
        print(
            json.dumps(
                {
                    "backend": backend,
                    "url": redact(url),
                    "handler_ms": args.handler_ms,
                    "keys": args.keys,
                    "messages": args.messages,
                    "max_in_flight": args.max_in_flight,
                    "msg_per_s": results,
                },
                indent=2,
            )
        )
    else:
        print(
            ordering_report(
                url, args.keys, args.messages, args.handler_ms, args.max_in_flight, results
            )
        )
    return 0


@contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    """A progress callback: a live status line on a terminal, plain lines otherwise; stderr
    either way, so that stdout keeps only the report."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda step: console.print(f"polybus bench: {step}", highlight=False)
        return
    with console.status("starting") as status:
        yield lambda step: status.update(step)


def load_baseline(backend: str, variant: str | None = None) -> RawBaseline:
    """The raw baseline of ``backend`` (from ``polybus_<backend>.bench``); ``variant``
    picks one of the module's ``RAW_VARIANTS`` (ValueError naming them otherwise)."""
    module_name = f"polybus_{backend}.bench"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"no raw baseline for {backend!r}: {module_name} is missing") from exc
    factory = getattr(module, "raw_baseline", None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no raw_baseline() function")
    if variant is None:
        baseline: RawBaseline = factory()
        return baseline
    variants = tuple(getattr(module, "RAW_VARIANTS", ()))
    if variant not in variants:
        offered = f"its variants: {', '.join(variants)}" if variants else "it has none"
        raise ValueError(f"the {backend} raw baseline has no variant {variant!r} ({offered})")
    baseline = factory(variant)
    return baseline


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fail(problem: str) -> int:
    print(f"polybus: {problem}", file=sys.stderr)
    return 2
