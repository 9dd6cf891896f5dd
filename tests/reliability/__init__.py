"""The adversarial reliability suite: ``pytest -m reliability`` (see docs/reliability.md)."""
