"""Inputs, a store client and checks for the job worker's integration tests.

Real speech from Debian's pocketsphinx-testdata, one recording re-encoded to
M4A (its index sits at the end, so decoding it from S3 needs ranged reads),
and the objects a job must survive: corrupt, zero-length, not audio, and a
header larger than the decoder's 64 MiB cap.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.audio.stream import AudioStream
from steno_inference.jobs import layout
from steno_inference.jobs.plan import Plan
from steno_inference.jobs.records import parse_record
from steno_inference.jobs.rendering import render_outputs
from steno_inference.storage.client import ObjectStorage
from steno_inference.storage.config import StaticCredentials, StorageConfig
from steno_inference.storage.uri import S3Uri

from support.speech import CARDS_DIR, LIBRIVOX_DIR

MIB = 1024 * 1024
HUGE_HEADER_BYTES = 65 * MIB  # just over audio.MAX_HEADER_BYTES (64 MiB)

SPEECH = {  # key under the input prefix → recording; all short (1 to 7 s)
    "cards/001.wav": CARDS_DIR / "001.wav",
    "cards/003.wav": CARDS_DIR / "003.wav",
    "cards/005.wav": CARDS_DIR / "005.wav",
    "librivox/0880.wav": LIBRIVOX_DIR / "sense_and_sensibility_01_austen_64kb-0880.wav",
    "librivox/0930.wav": LIBRIVOX_DIR / "sense_and_sensibility_01_austen_64kb-0930.wav",
}
M4A_SOURCE = LIBRIVOX_DIR / "sense_and_sensibility_01_austen_64kb-0870.wav"


def storage_for(store: Any, **changes: Any) -> ObjectStorage:
    """An ObjectStorage on the test's SeaweedFS, with its credentials."""
    settings: dict[str, Any] = {
        "endpoint_url": store.endpoint, "region": store.region,
        "credentials": StaticCredentials(store.access_key, store.secret_key),
    }
    config = StorageConfig(**{**settings, **changes})
    return ObjectStorage.from_config(config)


def encode_m4a(src: Path) -> bytes:
    """``src`` as AAC in an MP4 container (index written last), via PyAV."""
    with tempfile.TemporaryDirectory() as folder:
        dst = Path(folder) / "out.m4a"
        with av.open(str(src)) as inp, av.open(str(dst), "w", format="ipod") as out:
            stream = cast(AudioStream, out.add_stream("aac", rate=16000, layout="mono"))
            resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono",
                                          rate=16000)
            frames = [f for fr in inp.decode(audio=0) for f in resampler.resample(fr)]
            for frame in [*frames, *resampler.resample(None)]:
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        return dst.read_bytes()


def with_garbage(data: bytes, garbage_bytes: int) -> bytes:
    middle = len(data) // 2
    garbage = np.random.default_rng(1).integers(0, 256, garbage_bytes, dtype=np.uint8).tobytes()
    return data[: middle - garbage_bytes // 2] + garbage + data[middle + garbage_bytes // 2 :]


def id3_with_picture(picture_bytes: int) -> bytes:
    """An ID3v2 tag holding one cover picture of ``picture_bytes`` (a huge header)."""
    def syncsafe(n: int) -> bytes:
        return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])

    body = b"\x00image/png\x00\x03\x00" + bytes(picture_bytes)
    frame = b"APIC" + len(body).to_bytes(4, "big") + b"\x00\x00" + body
    return b"ID3\x03\x00\x00" + syncsafe(len(frame)) + frame


def png_1x1() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class BadInput:
    data: bytes
    reason: str  # the failure reason the manifest must give
    message_part: str  # a piece of its message


def bad_inputs(m4a: bytes) -> dict[str, BadInput]:
    return {
        "bad/corrupt.m4a": BadInput(with_garbage(m4a, 30_000), "corrupt", "undecodable packets"),
        "bad/empty.wav": BadInput(b"", "empty", "0 bytes"),
        "bad/picture.wav": BadInput(png_1x1(), "not_audio", "no audio stream"),
        "bad/notes.mp3": BadInput(b"meeting notes, not audio\n" * 40, "not_audio", "not a recog"),
        "bad/huge-header.mp3": BadInput(
            id3_with_picture(HUGE_HEADER_BYTES) + m4a, "not_audio", "64 MiB"),
    }


def put_all(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def incomplete_uploads(s3: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def get(s3: Any, uri: S3Uri) -> bytes:
    data: bytes = s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read()
    return data


@dataclass(frozen=True)
class CheckedJob:
    """A job's committed state, every byte checked."""

    files: dict[str, dict[str, Any]]  # input URI → its manifest entry
    manifests: int
    records: int
    outputs: dict[str, bytes]  # output URI → bytes


def check_manifests(s3: Any, plan: Plan, *, complete: bool) -> CheckedJob:
    """Every manifest present names objects that exist with its checksums, byte for byte.

    Each output must also equal what its record's transcript renders to. With
    ``complete``, every shard must have its manifest and every input must be
    listed exactly once; the store must hold nothing under the output prefix
    but the plan, one record per input, the manifests and the listed outputs.
    """
    output = plan.spec.output
    files: dict[str, dict[str, Any]] = {}
    outputs: dict[str, bytes] = {}
    manifests = 0
    for shard in range(plan.shard_count):
        uri = layout.manifest_uri(output, shard)
        try:
            manifest = json.loads(get(s3, uri))
        except s3.exceptions.NoSuchKey:
            if complete:
                raise AssertionError(f"{uri} is missing") from None
            continue
        manifests += 1
        assert manifest["jobId"] == plan.spec.job_id
        assert manifest["planSha256"] == plan.sha256
        assert [f["uri"] for f in manifest["files"]] == [str(i.uri) for i in plan.shard(shard)]
        for entry in manifest["files"]:
            assert entry["uri"] not in files, f"{entry['uri']} listed twice"
            files[entry["uri"]] = entry
            record = parse_record(get(s3, _uri(entry["record"])), entry["record"])
            assert str(record.input_uri) == entry["uri"]
            assert [o.to_dict() for o in record.outputs] == entry["outputs"]
            rendered = dict(render_outputs(record.transcript, [o["format"] for o in
                                                               entry["outputs"]])) \
                if record.transcript is not None else {}
            for out in entry["outputs"]:
                data = get(s3, _uri(out["uri"]))
                assert len(data) == out["size"]
                assert hashlib.sha256(data).hexdigest() == out["sha256"], out["uri"]
                assert hashlib.md5(data).hexdigest() == out["md5"]
                assert data == rendered[out["format"]], f"{out['uri']} differs from its record"
                outputs[out["uri"]] = data
    records = list_keys(s3, output.bucket, layout.records_prefix(output).key)
    if complete:
        assert sorted(files) == sorted(str(item.uri) for item in plan.inputs)
        expected = {str(layout.plan_uri(output))}
        expected |= {str(layout.manifest_uri(output, s)) for s in range(plan.shard_count)}
        expected |= {str(layout.record_uri(output, plan.record_id(i))) for i in plan.inputs}
        expected |= set(outputs)
        present = {f"s3://{output.bucket}/{key}" for key in list_keys(s3, output.bucket,
                                                                      output.key)}
        assert present == expected, (
            f"unexpected: {sorted(present - expected)}; missing: {sorted(expected - present)}")
        assert len(records) == len(plan.inputs)
    return CheckedJob(files, manifests, len(records), outputs)


def _uri(text: str) -> S3Uri:
    bucket, _, key = text.removeprefix("s3://").partition("/")
    return S3Uri(bucket, key)


EVENTS_MARKER = "steno_inference.jobs.events: "


def event_lines(logs: Iterable[str]) -> list[dict[str, Any]]:
    """The worker's JSON event lines (logger ``steno_inference.jobs.events``) in log texts."""
    events: list[dict[str, Any]] = []
    for text in logs:
        for line in io.StringIO(text):
            start = line.find(EVENTS_MARKER)
            if start >= 0:
                events.append(json.loads(line[start + len(EVENTS_MARKER):]))
    return events
