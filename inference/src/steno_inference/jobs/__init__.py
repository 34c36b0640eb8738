"""Transcription jobs: a plan of inputs split into shards, and the worker that commits a shard.

Modules, in the order data flows: :mod:`.spec` (the job spec),
:mod:`.plan` (inputs, output names, shards; create-only plan object),
:mod:`.layout` (every key under the output prefix), :mod:`.records` (commit
records and shard manifests), :mod:`.rendering` (outputs rendered from a
record), :mod:`.commit` (decide a file create-only, then roll its outputs
forward), :mod:`.prefetch` (inputs read ahead), :mod:`.worker`
(``run_shard``), :mod:`.pod` (a pod from plan URI to exit code) and
:mod:`.exitcodes`. The protocol is described in ``docs/jobs.md``.
"""
