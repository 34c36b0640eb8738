"""Benchmarks of the engine against the insanely-fast-whisper recipe, on random-weight models.

A random-weight model of a Whisper shape, decoding a fixed number of tokens
per window, times exactly like the real one: the work per step depends on the
shapes, not on the values. ``shapes`` builds such models without downloads,
``recipe`` runs the transformers pipeline as insanely-fast-whisper's CLI does,
``throughput`` runs steno's runner and prints the side-by-side table, and
``machine`` records what it ran on.
"""
