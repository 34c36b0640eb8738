"""Version 1 of steno's gRPC API, generated from transcription.proto by scripts/gen-proto."""
