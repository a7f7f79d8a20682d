"""polybus's SQS/SNS backend, ``sqs://?region=REGION&endpoint_url=URL`` (see README.md)."""

from ._adapter import SQSAdapter, capabilities_for
from ._consumer import SQSConsumer
from ._settings import SQSSettings

__all__ = ["SQSAdapter", "SQSConsumer", "SQSSettings", "capabilities_for"]
