"""Shared pytest configuration: the development-cluster fixtures."""

pytest_plugins = ["steno_devcluster.pytest_plugin"]
