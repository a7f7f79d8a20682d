"""Shared helpers of the SQS adapter tests. The broker itself comes from the
``sqs_url`` fixture (``conftest.py``)."""

from __future__ import annotations

import uuid

from polybus_conformance.provisioning import urls


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"


def with_options(url: str, **options: object) -> str:
    """``url`` with extra query options (replacing any of the same name)."""
    return urls.with_options(url, options)
