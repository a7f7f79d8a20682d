"""polybus sqs adapter (in progress)."""
