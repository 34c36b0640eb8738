"""steno's gRPC API: generated protobuf and gRPC code (see scripts/gen-proto)."""
