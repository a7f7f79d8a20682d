"""polybus rabbitmq adapter (in progress)."""
