"""Shared test configuration: the real-service fixtures live in tests/support/plugin.py."""

pytest_plugins = ["tests.support.plugin"]
