"""Object storage through the S3 API: configuration, URIs and keys, a typed client, listing.

boto3 is the client library: it is the reference S3 implementation, resolves
endpoint, region and credentials exactly as every AWS tool does (so AWS S3,
GCS's interoperability endpoint, Ceph, MinIO and SeaweedFS work from the same
settings), exposes conditional writes (``If-None-Match``/``If-Match``) and
the checksum switches, and is thread-safe per client. See ``docs/jobs.md``.

Modules: :mod:`.config` (settings from the environment, the client factory),
:mod:`.uri` (``s3://`` URIs and the rules for keys steno writes),
:mod:`.errors` (one exception class per thing a caller can do),
:mod:`.client` (:class:`~.client.ObjectStorage`, :func:`~.client.open_uri`),
:mod:`.reader` (streamed, seekable object reads), :mod:`.lister` (inputs).
Nothing here imports the engine, torch or grpc.
"""

from steno_inference.storage.client import ObjectInfo, ObjectStorage, open_uri
from steno_inference.storage.config import StorageConfig
from steno_inference.storage.uri import S3Uri, parse_uri

__all__ = ["ObjectInfo", "ObjectStorage", "S3Uri", "StorageConfig", "open_uri", "parse_uri"]
