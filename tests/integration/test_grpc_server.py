"""The gRPC server for real: tiny.en on CPU, 127.0.0.1, called through the generated stubs.

One engine serves every test (the session's ``tiny_engine``); each test
starts its own server on a free port. States such as "queued" or "in
flight" are made deterministic with :class:`EncoderGate`, which holds the
decoder thread inside the encoder until the test opens it.
"""

from __future__ import annotations

import difflib
import json
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from steno_api.v1 import transcription_pb2 as pb
from steno_api.v1 import transcription_pb2_grpc as pb_grpc
from steno_inference.progress import FileFailure, ProgressBoard
from steno_inference.server.server import SERVICE_NAME
from support.grpc_server import EncoderGate, make_certificates, wait_until
from support.speech import librivox_utterances, normalize_text, read_wav

pytestmark = pytest.mark.integration

CALL_TIMEOUT_S = 300.0  # a generous bound for one call on two busy cores
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# ----------------------------------------------------------------- fixtures


@pytest.fixture
def stub(channels):
    return lambda server: pb_grpc.TranscriptionServiceStub(channels(server))


@pytest.fixture(scope="module")
def utterances(speech_data):
    return librivox_utterances()


def _close_to(text: str, reference: str) -> bool:
    """tiny.en mishears a word now and then: most of the reference's words, in order."""
    words, expected = normalize_text(text).split(), reference.split()
    return difflib.SequenceMatcher(None, words, expected).ratio() >= 0.75


def _wav(utterance) -> bytes:
    return utterance.path.read_bytes()


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def _health(channel: grpc.Channel, service: str = "") -> int:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=10
    )
    return int(response.status)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def _error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# -------------------------------------------------------------------- unary


def test_unary_bytes_returns_transcript_every_format_and_metrics(serve, stub, utterances):
    server = serve(metrics_port=0)
    formats = [pb.OUTPUT_FORMAT_JSON, pb.OUTPUT_FORMAT_SRT, pb.OUTPUT_FORMAT_VTT,
               pb.OUTPUT_FORMAT_TXT, pb.OUTPUT_FORMAT_TSV]
    response = stub(server).Transcribe(
        pb.TranscribeRequest(
            audio=_wav(utterances[0]), source_name="talk.wav",
            options=pb.TranscriptionOptions(formats=formats),
        ),
        timeout=CALL_TIMEOUT_S,
    )
    transcript = response.transcript
    assert normalize_text(transcript.text).startswith("and mister john dashwood")
    assert transcript.duration_s == pytest.approx(7.1, abs=0.05)
    assert (transcript.source, transcript.model, transcript.language) == (
        "talk.wav", "tiny.en", "en")
    assert transcript.segments and transcript.segments[0].start_s < 1.0
    assert [output.format for output in response.outputs] == formats
    rendered = {output.format: output.content for output in response.outputs}
    assert json.loads(rendered[pb.OUTPUT_FORMAT_JSON])["text"] == transcript.text
    assert rendered[pb.OUTPUT_FORMAT_SRT].startswith("1\n00:00:0")
    assert rendered[pb.OUTPUT_FORMAT_VTT].startswith("WEBVTT")
    assert "dashwood" in rendered[pb.OUTPUT_FORMAT_TXT].lower()
    assert rendered[pb.OUTPUT_FORMAT_TSV].startswith("start\tend\ttext\n")
    assert 0.0 < response.timing.queue_wait_s <= response.timing.processing_s

    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics") as page:
        metrics = page.read().decode()
    assert 'steno_grpc_calls_total{code="OK",method="Transcribe"} 1.0' in metrics
    for name in ("steno_audio_processed_seconds_total", "steno_queue_wait_seconds_count",
                 "steno_encoder_windows_total", "steno_decoder_busy_rows_total",
                 "steno_queue_audio_seconds", "steno_admission_limit_audio_seconds"):
        assert name in metrics, name
    audio_done = next(line for line in metrics.splitlines()
                      if line.startswith("steno_audio_processed_seconds_total"))
    assert float(audio_done.split()[-1]) > 5.0


def test_unary_raw_pcm_with_word_timestamps(serve, stub, utterances):
    server = serve()
    utterance = utterances[1]  # "he was not an ill disposed young man", 3 s
    response = stub(server).Transcribe(
        pb.TranscribeRequest(
            audio=_pcm16(read_wav(utterance.path)),
            raw_pcm=pb.RawPcmFormat(sample_rate_hz=16000, encoding=pb.PCM_ENCODING_S16LE),
            options=pb.TranscriptionOptions(timestamps=pb.TIMESTAMP_GRANULARITY_WORD),
        ),
        timeout=CALL_TIMEOUT_S,
    )
    assert _close_to(response.transcript.text, utterance.reference)
    assert response.transcript.source == "<bytes>"
    words = [word for segment in response.transcript.segments for word in segment.words]
    assert normalize_text("".join(w.text for w in words)) == normalize_text(
        response.transcript.text)
    starts = [word.start_s for word in words]
    assert starts == sorted(starts) and all(w.end_s >= w.start_s for w in words)


# ---------------------------------------------------------------- streaming


def test_stream_raw_pcm_sends_segments_before_the_input_ends(serve, stub, utterances):
    """Multi-window speech at a declared 22.05 kHz: window 0 comes back while audio still flows."""
    server = serve()
    gap = np.zeros(int(1.5 * 16000), dtype=np.float32)
    one_pass = np.concatenate([part for u in utterances for part in (read_wav(u.path), gap)])
    audio_16k = np.concatenate([one_pass] * 3)  # ~96 s, ~74 s of speech: three windows
    rate = 22050
    t_out = np.arange(int(audio_16k.size * rate / 16000)) / rate
    pcm = _pcm16(np.interp(t_out, np.arange(audio_16k.size) / 16000, audio_16k))
    chunk = 32 * 1024
    held_back_from = int(len(pcm) * 2 / 3) // 2 * 2  # whole samples
    first_window = threading.Event()
    waited_in_vain = threading.Event()

    def requests():
        config = pb.StreamConfig(
            raw_pcm=pb.RawPcmFormat(sample_rate_hz=rate, encoding=pb.PCM_ENCODING_S16LE),
            options=pb.TranscriptionOptions(formats=[pb.OUTPUT_FORMAT_TXT]),
            source_name="live",
        )
        yield pb.StreamTranscribeRequest(config=config)
        for start in range(0, held_back_from, chunk):
            yield pb.StreamTranscribeRequest(audio=pcm[start:min(start + chunk, held_back_from)])
        # The last third is sent only once the server has answered with a window.
        if not first_window.wait(CALL_TIMEOUT_S):
            waited_in_vain.set()
        for start in range(held_back_from, len(pcm), chunk):
            yield pb.StreamTranscribeRequest(audio=pcm[start:start + chunk])

    kinds: list[str] = []
    windows: list[pb.StreamSegments] = []
    summary = None
    for response in stub(server).StreamTranscribe(requests(), timeout=CALL_TIMEOUT_S):
        kind = response.WhichOneof("event")
        kinds.append(kind)
        if kind == "segments":
            windows.append(response.segments)
            first_window.set()
        else:
            summary = response.summary
    assert not waited_in_vain.is_set(), "no segments came back before the input ended"
    assert kinds[-1] == "summary" and kinds.count("summary") == 1
    assert [w.window_index for w in windows] == list(range(len(windows)))
    assert len(windows) >= 3
    audio_done = [w.audio_s_done for w in windows]
    assert audio_done == sorted(audio_done)
    segments = [s for w in windows for s in w.segments]
    assert summary.segment_count == len(segments)
    assert summary.duration_s == pytest.approx(audio_16k.size / 16000, abs=0.1)
    starts = [s.start_s for s in segments]
    assert starts == sorted(starts)
    text = normalize_text(" ".join(s.text for s in segments))
    assert text.count("dashwood") == 3
    assert text.count("respectable") == 3
    (txt,) = summary.outputs
    assert txt.format == pb.OUTPUT_FORMAT_TXT and txt.content.lower().count("dashwood") == 3


# ------------------------------------------------------ health and drain


def test_health_turns_serving_after_warm_up_and_drain_lets_in_flight_calls_finish(
    serve, stub, channels, tiny_engine, utterances,
):
    server = serve(serving=False, grace_s=120)
    channel = channels(server)
    for service in ("", SERVICE_NAME):
        assert _health(channel, service) == NOT_SERVING
    server.warm_up()
    server.set_serving()
    assert _health(channel) == SERVING
    assert _health(channel, SERVICE_NAME) == SERVING

    client = stub(server)
    with EncoderGate(tiny_engine.runner) as gate, futures.ThreadPoolExecutor(2) as pool:
        in_flight = client.Transcribe.future(
            pb.TranscribeRequest(audio=_wav(utterances[1])), timeout=CALL_TIMEOUT_S)
        assert gate.entered.wait(60), "the call never reached the encoder"
        drained = pool.submit(server.drain)
        wait_until(lambda: _health(channel) == NOT_SERVING, 30, "health NOT_SERVING")
        assert _health(channel, SERVICE_NAME) == NOT_SERVING
        refused = _error(lambda: client.Transcribe(
            pb.TranscribeRequest(audio=_wav(utterances[1])), timeout=30))
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "draining" in refused.details()
        assert not drained.done()
        gate.open()
        response = in_flight.result()
        assert _close_to(response.transcript.text, utterances[1].reference)
        assert drained.result(timeout=60) is True
    with pytest.raises(grpc.RpcError) as after:
        _health(channel)
    assert after.value.code() == grpc.StatusCode.UNAVAILABLE


def test_drain_stops_calls_still_running_when_the_grace_period_ends(
    serve, stub, tiny_engine, utterances,
):
    server = serve(grace_s=0.2)
    with EncoderGate(tiny_engine.runner) as gate, futures.ThreadPoolExecutor(1) as pool:
        in_flight = stub(server).Transcribe.future(
            pb.TranscribeRequest(audio=_wav(utterances[0])), timeout=CALL_TIMEOUT_S)
        assert gate.entered.wait(60)
        drained = pool.submit(server.drain)
        wait_until(lambda: server.core.aborting, 30, "the grace period to end")
        gate.open()
        error = _error(in_flight.result)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "shut down before the call finished" in error.details()
        assert drained.result(timeout=60) is False


# ---------------------------------------------- queue, deadline, overload


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_call_that_ends_while_queued_never_reaches_the_encoder(
    serve, stub, tiny_engine, utterances, how,
):
    server = serve()
    client = stub(server)
    encoded_before = tiny_engine.runner.stats.windows_encoded
    with EncoderGate(tiny_engine.runner) as gate:
        first = client.Transcribe.future(
            pb.TranscribeRequest(audio=_wav(utterances[1])), timeout=CALL_TIMEOUT_S)
        assert gate.entered.wait(60)
        queued = client.Transcribe.future(
            pb.TranscribeRequest(audio=_wav(utterances[2])),
            timeout=3.0 if how == "deadline" else CALL_TIMEOUT_S,
        )
        wait_until(lambda: tiny_engine.stats().queued_windows == 1, 30, "the window queued")
        if how == "cancel":
            assert queued.cancel()
            assert queued.code() == grpc.StatusCode.CANCELLED
        else:
            assert _code(queued.result) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert tiny_engine.stats().queued_windows == 1  # still queued: the decoder was held
        gate.open()
        assert _close_to(first.result().transcript.text, utterances[1].reference)
    assert server.core.wait_idle(30)
    assert gate.batches == [1]  # only the first call's window was ever encoded
    assert tiny_engine.runner.stats.windows_encoded - encoded_before == 1
    assert tiny_engine.stats().queued_windows == 0
    assert server.admission.reserved_s() == 0.0


def test_overload_is_refused_with_a_retry_hint_and_admitted_calls_finish(
    serve, stub, tiny_engine, utterances,
):
    server = serve(max_queue_audio_s=10.0, long_call_reserve_s=10.0)
    client = stub(server)
    with EncoderGate(tiny_engine.runner) as gate:
        admitted = client.Transcribe.future(
            pb.TranscribeRequest(audio=_wav(utterances[0])), timeout=CALL_TIMEOUT_S)  # 7.1 s
        assert gate.entered.wait(60)
        refused = _error(lambda: client.Transcribe(
            pb.TranscribeRequest(audio=_wav(utterances[3])), timeout=30))  # 6.05 s: no room
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "server busy" in refused.details() and "limit is 10 s" in refused.details()
        trailers = dict(refused.trailing_metadata())
        assert 100 <= int(trailers["retry-after-ms"]) <= 60_000
        assert trailers["grpc-retry-pushback-ms"] == trailers["retry-after-ms"]
        gate.open()
        assert admitted.result().transcript.text
    assert server.core.wait_idle(30)
    assert server.admission.reserved_s() == 0.0
    retried = client.Transcribe(pb.TranscribeRequest(audio=_wav(utterances[3])),
                                timeout=CALL_TIMEOUT_S)
    assert "respectable" in retried.transcript.text


def test_windows_of_concurrent_calls_share_one_encoder_batch(serve, stub, tiny_engine, utterances):
    server = serve()
    client = stub(server)
    with EncoderGate(tiny_engine.runner) as gate:
        first = client.Transcribe.future(
            pb.TranscribeRequest(audio=_wav(utterances[1])), timeout=CALL_TIMEOUT_S)
        assert gate.entered.wait(60)
        others = [
            client.Transcribe.future(pb.TranscribeRequest(audio=_wav(u)), timeout=CALL_TIMEOUT_S)
            for u in utterances[2:5]
        ]
        wait_until(lambda: tiny_engine.stats().queued_windows == 3, 60, "three queued windows")
        gate.open()
        texts = [call.result().transcript.text for call in [first, *others]]
    for text, utterance in zip(texts, utterances[1:5], strict=True):
        assert _close_to(text, utterance.reference), (text, utterance.reference)
    assert gate.batches == [1, 3]


# ---------------------------------------------------------------- errors


class _Transient(RuntimeError):
    retryable = True


def _opener(utterance):
    def open_uri(uri: str):
        key = uri.removeprefix("s3://bucket/")
        if key == "speech.wav":
            return open(utterance.path, "rb")
        if key == "missing.wav":
            raise FileNotFoundError(uri)
        if key == "denied.wav":
            raise PermissionError("AccessDenied on bucket secret-internal-bucket")
        if key == "flaky.wav":
            raise _Transient("store timed out")
        if key == "prefix/":
            raise ValueError("'s3://bucket/prefix/' names a prefix, not an object")
        raise RuntimeError("boom at /srv/secret/internal/path")

    return open_uri


def test_every_error_has_its_code_and_a_one_line_message(serve, stub, utterances):
    server = serve(max_audio_bytes=150_000, open_uri=_opener(utterances[1]))
    client = stub(server)
    small = _wav(utterances[1])  # 96 kB

    def transcribe(**fields):
        options = fields.pop("options", pb.TranscriptionOptions())
        return lambda: client.Transcribe(
            pb.TranscribeRequest(options=options, **fields), timeout=60)

    def options(**fields):
        return transcribe(audio=small, options=pb.TranscriptionOptions(**fields))

    cases = [
        (transcribe(audio=b""), grpc.StatusCode.INVALID_ARGUMENT, "<bytes>: input is empty"),
        (transcribe(audio=b"plain text, not audio " * 20), grpc.StatusCode.INVALID_ARGUMENT,
         "not a recognized audio"),
        (transcribe(), grpc.StatusCode.INVALID_ARGUMENT, "no audio"),
        (transcribe(audio=small, raw_pcm=pb.RawPcmFormat()), grpc.StatusCode.INVALID_ARGUMENT,
         "sample_rate_hz"),
        (transcribe(audio=small, raw_pcm=pb.RawPcmFormat(sample_rate_hz=1_000_000)),
         grpc.StatusCode.INVALID_ARGUMENT, "raw sample rate"),
        (options(language="xx"), grpc.StatusCode.INVALID_ARGUMENT, "unknown language 'xx'"),
        (options(task=pb.TASK_TRANSLATE), grpc.StatusCode.INVALID_ARGUMENT, "English-only"),
        (options(min_speakers=3, max_speakers=2), grpc.StatusCode.INVALID_ARGUMENT,
         "min_speakers (3) exceeds max_speakers (2)"),
        (options(num_speakers=40), grpc.StatusCode.INVALID_ARGUMENT, "num_speakers must be"),
        (options(formats=[pb.OUTPUT_FORMAT_UNSPECIFIED]), grpc.StatusCode.INVALID_ARGUMENT,
         "unknown output format"),
        (options(model="large-v3"), grpc.StatusCode.NOT_FOUND,
         "model 'large-v3' is not served here"),
        (transcribe(audio_uri="s3://bucket/missing.wav"), grpc.StatusCode.NOT_FOUND,
         "s3://bucket/missing.wav: object not found"),
        (transcribe(audio_uri="https://example.org/a.wav"), grpc.StatusCode.INVALID_ARGUMENT,
         "unsupported URI"),
        (transcribe(audio_uri="s3://bucket/prefix/"), grpc.StatusCode.INVALID_ARGUMENT,
         "names a prefix"),
        (transcribe(audio_uri="s3://bucket/denied.wav"), grpc.StatusCode.PERMISSION_DENIED,
         "permission denied"),
        (transcribe(audio_uri="s3://bucket/flaky.wav"), grpc.StatusCode.UNAVAILABLE,
         "object storage is unavailable"),
        (transcribe(audio_uri="s3://bucket/broken.wav"), grpc.StatusCode.INTERNAL,
         "internal error (ref "),
        (transcribe(audio=_wav(utterances[3])), grpc.StatusCode.RESOURCE_EXHAUSTED,  # 194 kB
         "the limit is 150000 bytes"),
        (transcribe(audio=b"\0" * 400_000), grpc.StatusCode.RESOURCE_EXHAUSTED,
         "larger than max"),
        (lambda: next(iter(client.WatchProgress(pb.WatchProgressRequest(), timeout=30))),
         grpc.StatusCode.FAILED_PRECONDITION, "not a job pod"),
        (lambda: list(client.StreamTranscribe(
            iter([pb.StreamTranscribeRequest(audio=small)]), timeout=30)),
         grpc.StatusCode.INVALID_ARGUMENT, "first StreamTranscribe message must be a config"),
        (lambda: list(client.StreamTranscribe(
            iter([pb.StreamTranscribeRequest(config=pb.StreamConfig()),
                  pb.StreamTranscribeRequest(config=pb.StreamConfig())]), timeout=30)),
         grpc.StatusCode.INVALID_ARGUMENT, "config may only be sent in the first"),
        (lambda: list(client.StreamTranscribe(
            iter([pb.StreamTranscribeRequest(config=pb.StreamConfig(
                options=pb.TranscriptionOptions(language="xx")))]), timeout=30)),
         grpc.StatusCode.INVALID_ARGUMENT, "unknown language"),
    ]
    for call, code, text in cases:
        error = _error(call)
        assert (error.code(), text in error.details()) == (code, True), (
            text, error.code(), error.details())
        assert "\n" not in error.details()
        assert "secret" not in error.details()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # an oversize message: retrying won't help
            assert "retry-after-ms" not in dict(error.trailing_metadata() or ())

    # The same opener serves an object that exists: read by the server, paced, transcribed.
    response = client.Transcribe(pb.TranscribeRequest(audio_uri="s3://bucket/speech.wav"),
                                 timeout=CALL_TIMEOUT_S)
    assert _close_to(response.transcript.text, utterances[1].reference)
    assert response.transcript.source == "s3://bucket/speech.wav"


# ------------------------------------------------------ auth, TLS, reflection


def test_bearer_token_is_required_and_never_logged(serve, channels, caplog):
    token = "tok-5f2a9c1e-never-print-me"
    server = serve(auth_tokens=(token, "rotated-older-token"))
    channel = channels(server)
    client = pb_grpc.TranscriptionServiceStub(channel)
    info = pb.GetServerInfoRequest()
    missing = _error(lambda: client.GetServerInfo(info, timeout=10))
    assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing bearer token" in missing.details()
    wrong = _error(lambda: client.GetServerInfo(
        info, timeout=10, metadata=(("authorization", "Bearer tok-5f2a9c1e-never-print-ME"),)))
    assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == "invalid bearer token"
    streamed = _error(lambda: list(client.StreamTranscribe(
        iter([pb.StreamTranscribeRequest(config=pb.StreamConfig())]), timeout=10)))
    assert streamed.code() == grpc.StatusCode.UNAUTHENTICATED
    for accepted in (token, "rotated-older-token"):
        response = client.GetServerInfo(
            info, timeout=10, metadata=(("authorization", f"Bearer {accepted}"),))
        assert response.models[0].name == "tiny.en"
    assert _health(channel) == SERVING  # probes carry no token
    assert token not in caplog.text and token not in repr(server.settings)


def test_tls_and_mutual_tls(serve, tmp_path):
    from steno_inference.server.client import StenoClient
    from steno_inference.server.tls import TlsFiles

    certs = make_certificates(tmp_path)
    tls = serve(tls=TlsFiles(certs.server_cert, certs.server_key))
    with StenoClient(f"127.0.0.1:{tls.port}", ca_cert=certs.ca, timeout_s=10) as client:
        assert client.server_info().models[0].name == "tiny.en"
    with StenoClient(f"127.0.0.1:{tls.port}", ca_cert=certs.other_ca, timeout_s=10) as client:
        assert _code(client.server_info) == grpc.StatusCode.UNAVAILABLE  # untrusted server
    plain = grpc.insecure_channel(f"127.0.0.1:{tls.port}")
    assert _code(lambda: pb_grpc.TranscriptionServiceStub(plain).GetServerInfo(
        pb.GetServerInfoRequest(), timeout=10)) == grpc.StatusCode.UNAVAILABLE
    plain.close()

    mtls = serve(tls=TlsFiles(certs.server_cert, certs.server_key, certs.ca))
    target = f"127.0.0.1:{mtls.port}"
    with StenoClient(target, ca_cert=certs.ca, client_cert=certs.client_cert,
                     client_key=certs.client_key, timeout_s=10) as client:
        assert client.server_info().models[0].name == "tiny.en"
    with StenoClient(target, ca_cert=certs.ca, timeout_s=10) as client:
        assert _code(client.server_info) == grpc.StatusCode.UNAVAILABLE  # no client certificate


def test_reflection_only_behind_its_flag(serve, channels):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    def services(server):
        stub = reflection_pb2_grpc.ServerReflectionStub(channels(server))
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        return {service.name for service in response.list_services_response.service}

    assert SERVICE_NAME in services(serve(reflection=True))
    assert _code(lambda: services(serve())) == grpc.StatusCode.UNIMPLEMENTED


def test_server_info_states_the_limits(serve, stub):
    server = serve(max_audio_bytes=1_000_000, max_queue_audio_s=120, grace_s=7)
    info = stub(server).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.models[0].name == "tiny.en" and not info.models[0].multilingual
    assert info.models[0].device == "cpu" and info.models[0].batch_size >= 1
    assert info.limits.max_audio_bytes == 1_000_000
    assert info.limits.max_message_bytes > 1_000_000
    assert (info.limits.max_queue_audio_s, info.limits.grace_s) == (120, 7)
    assert info.mode == "pool" and not info.progress


# ------------------------------------------------------------------ progress


def test_watch_progress_streams_a_job_pods_shard_until_it_finishes(serve, stub):
    board = ProgressBoard()
    board.update(state="running", files_total=3, audio_s_total=90.0)
    server = serve(progress=board, mode="job")
    responses = stub(server).WatchProgress(pb.WatchProgressRequest(), timeout=60)
    first = next(responses)
    assert (first.state, first.files_total, first.audio_s_total) == (
        pb.SHARD_STATE_RUNNING, 3, 90.0)
    board.add_audio(30.0)
    board.file_done()
    board.file_done(FileFailure("s3://in/b.wav", "b.wav: not audio"))
    board.add_audio(60.0)
    board.file_done()
    board.update(state="succeeded", finished=True)
    rest = list(responses)  # the stream ends by itself after the finished state
    last = rest[-1]
    assert last.finished and last.state == pb.SHARD_STATE_SUCCEEDED
    assert (last.files_done, last.files_failed, last.audio_s_done) == (3, 1, 90.0)
    failures = [f for message in [first, *rest] for f in message.new_failures]
    assert [(f.uri, f.reason) for f in failures] == [("s3://in/b.wav", "b.wav: not audio")]
    versions = [message.version for message in [first, *rest]]
    assert versions == sorted(versions)
    assert (
        stub(server).GetServerInfo(pb.GetServerInfoRequest(), timeout=10).progress is True
    )


def test_a_late_watcher_gets_every_failure_in_its_first_message(serve, stub):
    board = ProgressBoard()
    board.update(state="running", files_total=2)
    board.file_done(FileFailure("s3://in/a.wav", "a.wav: empty"))
    server = serve(progress=board, mode="job")
    responses = stub(server).WatchProgress(pb.WatchProgressRequest(), timeout=60)
    first = next(responses)
    assert [f.uri for f in first.new_failures] == ["s3://in/a.wav"]
    started = time.monotonic()
    board.update(state="failed", finished=True, message="gave up")
    (last,) = [m for m in responses if m.finished]
    assert last.state == pb.SHARD_STATE_FAILED and last.message == "gave up"
    assert not last.new_failures
    assert time.monotonic() - started < 10
