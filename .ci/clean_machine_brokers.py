"""Delete what the conformance suite created on the machine's shared brokers.

The suite names every topic ``pb-...`` (polybus_conformance.fixtures.Names). Runs against
a broker given by URL leave their queues and streams behind; on the machine's RabbitMQ
(a 1,024 file-handle limit) a few hundred leftover quorum queues exhaust the handles and
the broker stops completing AMQP handshakes. CI therefore cleans before and after its
passes against the machine's RabbitMQ and NATS. Only names with the suite's prefix are
touched.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

PREFIX = "pb-"

# quorum and classic queues alike; catch: a queue deleted meanwhile is not an error
RABBITMQ_EVAL = (
    'length([catch rabbit_amqqueue:delete(Q, false, false, <<"polybus-ci">>) '
    "|| Q <- rabbit_amqqueue:list(), "
    f"binary:part(element(4, amqqueue:get_name(Q)), 0, "
    f'min({len(PREFIX)}, byte_size(element(4, amqqueue:get_name(Q))))) =:= <<"{PREFIX}">>]).'
)


def clean_rabbitmq() -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", "eval", RABBITMQ_EVAL],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        return f"rabbitmq: cleanup failed: {done.stderr.strip() or done.stdout.strip()}"
    return f"rabbitmq: deleted {done.stdout.strip()} queues named {PREFIX}*"


async def clean_nats(url: str) -> str:
    import nats

    client = await nats.connect(url, connect_timeout=5)
    try:
        js = client.jetstream()
        deleted = 0
        for info in await js.streams_info():
            name = info.config.name or ""
            subjects = info.config.subjects or []
            if name.startswith(f"polybus-{PREFIX}") or any(
                s.startswith(f"polybus.{PREFIX}") for s in subjects
            ):
                await js.delete_stream(name)
                deleted += 1
        return f"nats: deleted {deleted} streams of topics named {PREFIX}*"
    finally:
        await client.close()


def main() -> int:
    print(clean_rabbitmq())
    try:
        print(asyncio.run(clean_nats("nats://127.0.0.1:4222")))
    except Exception as exc:  # report, do not fail CI for a cleanup
        print(f"nats: cleanup failed: {exc!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
