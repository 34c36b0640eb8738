"""steno's contracts between its parts, shared by the worker and the operator.

:mod:`steno_api.v1`: the gRPC API, generated protobuf and gRPC code (see
scripts/gen-proto). :mod:`steno_api.plan`: a job's plan, the document the
operator writes and the worker pods read (standard library only).
"""
