"""Making the google-cloud-pubsub async clients: the emulator or Google Cloud."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from ._settings import PubSubSettings

_CHANNEL_OPTIONS = [
    # a 10 MB message must fit both ways (gRPC's default receive limit is 4 MB)
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # after an outage the channel tries to reconnect at least every 5 s (gRPC's own
    # default backs off to 120 s, keeping a recovered emulator out of reach that long)
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


@dataclass(slots=True)
class Clients:
    publisher: PublisherAsyncClient
    subscriber: SubscriberAsyncClient

    async def close(self) -> None:
        await self.publisher.transport.close()  # type: ignore[no-untyped-call]
        await self.subscriber.transport.close()  # type: ignore[no-untyped-call]


def make_clients(settings: PubSubSettings) -> Clients:
    """Async gRPC clients (call inside the running event loop).

    With an emulator host: plain-text gRPC, no credentials. Otherwise Google Cloud with
    application default credentials, or what ``settings.options`` pass (their
    ``credentials`` / ``client_options`` go to the client untouched).
    """
    host = settings.emulator_host
    options: dict[str, Any] = dict(settings.options)
    if host:
        pub_channel = grpc.aio.insecure_channel(host, options=_CHANNEL_OPTIONS)
        sub_channel = grpc.aio.insecure_channel(host, options=_CHANNEL_OPTIONS)
        return Clients(
            PublisherAsyncClient(
                transport=PublisherGrpcAsyncIOTransport(channel=pub_channel), **options
            ),
            SubscriberAsyncClient(
                transport=SubscriberGrpcAsyncIOTransport(channel=sub_channel), **options
            ),
        )
    return Clients(PublisherAsyncClient(**options), SubscriberAsyncClient(**options))
