"""steno's gRPC server and client: ``steno_api.v1`` over the one engine.

Modules, one concern each:

* ``server``: settings, the factory :func:`~steno_inference.server.server.build_server`,
  start, warm-up, health, drain;
* ``servicer``: protobuf messages in and out (thin); ``messages``: the conversions;
* ``core``: what a call does, transport-free: admission, engine runs, streaming,
  progress watching; ``pump`` and ``readers`` are its plumbing;
* ``admission``: the bounded queue in audio seconds; ``errors``: the one
  failure → status table, ``failures``: the server's own exceptions;
  ``limits``: every default limit; ``calls``: plain data of a call;
* ``auth`` (bearer tokens), ``tls``, ``metrics`` (Prometheus), ``warmup``,
  ``uri`` (s3:// through the storage package);
* ``client``: the Python client class, :class:`~steno_inference.server.client.StenoClient`.

Importing this package loads nothing heavy; ``client`` needs no engine or torch.
"""
