"""polybus kafka adapter (in progress)."""
