"""Shared helpers for steno's tests: real speech fixtures and synthesized dialogues."""
