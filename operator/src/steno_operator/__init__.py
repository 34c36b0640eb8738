"""steno's Kubernetes operator: TranscriptionJobs (steno.dev/v1alpha1) → GPU Jobs → status.

Modules, one concern each: :mod:`.spec` (the typed, validated spec),
:mod:`.conditions` (status decisions, pure), :mod:`.manifests` (the Job and
names, pure), :mod:`.observe` (Job and pod summaries, pure), :mod:`.planning`
(the plan object), :mod:`.results` (shard manifests, the result manifest),
:mod:`.storage` (object storage), :mod:`.progress` (WatchProgress streams),
:mod:`.kube` (the Kubernetes API), :mod:`.reconciler` (the loop),
:mod:`.handlers` (Kopf wiring), :mod:`.settings`, :mod:`.metrics`, and
``__main__`` (the ``steno-operator`` command). Importing the package runs
nothing.
"""
