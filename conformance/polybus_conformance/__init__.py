"""polybus's conformance suite: a pytest plugin that certifies a backend's guarantees."""
