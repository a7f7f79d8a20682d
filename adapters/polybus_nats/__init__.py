"""polybus nats adapter (in progress)."""
