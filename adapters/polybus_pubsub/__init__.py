"""polybus pubsub adapter (in progress)."""
