"""Shared pytest configuration: the development-cluster fixtures."""

pytest_plugins = [
    "steno_devcluster.pytest_plugin",
    "support.grpc_server",  # serve, channels: gRPC servers around the test engine
]
