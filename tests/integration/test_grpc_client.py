"""The Python client class and the ``steno serve`` / ``steno client`` commands, end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from steno_inference.options import TranscribeOptions
from steno_inference.progress import FileFailure, ProgressBoard
from steno_inference.server.calls import RawPcmSpec
from steno_inference.server.client import StenoClient, StreamEnd, StreamWindow, retry_after_s
from support.grpc_server import EncoderGate, wait_until
from support.serve_process import free_port
from support.speech import librivox_utterances, normalize_text, read_wav

pytestmark = pytest.mark.integration

CALL_TIMEOUT_S = 300.0
SERVER_START_S = 300.0  # model load and warm-up in a fresh process on two busy cores


@pytest.fixture(scope="module")
def utterances(speech_data):
    return librivox_utterances()


def test_client_transcribes_paths_bytes_and_raw_pcm(serve, utterances):
    server = serve()
    with StenoClient(f"127.0.0.1:{server.port}", timeout_s=CALL_TIMEOUT_S) as client:
        assert client.health() == "SERVING"
        by_path = client.transcribe(utterances[0].path, formats=("srt", "json"))
        assert normalize_text(by_path.transcript.text).startswith("and mister john dashwood")
        assert by_path.transcript.source == utterances[0].path.name
        assert set(by_path.outputs) == {"srt", "json"}
        assert json.loads(by_path.outputs["json"])["text"] == by_path.transcript.text

        pcm = (read_wav(utterances[4].path) * 32767).astype("<i2").tobytes()
        raw = client.transcribe(
            pcm, raw_pcm=RawPcmSpec(16000), name="take 2",
            options=TranscribeOptions(timestamps="word"),
        )
        assert "amiable" in raw.transcript.text and raw.transcript.source == "take 2"
        assert all(segment.words for segment in raw.transcript.segments)
        assert "StenoClient('127.0.0.1" in repr(client)


def test_client_streams_a_container_file_and_stops_early_on_request(
    serve, tiny_engine, utterances, tmp_path,
):
    server = serve()
    gap = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([p for u in utterances for p in (read_wav(u.path), gap)] * 2)
    wav = tmp_path / "two-passes.wav"
    from support.speech import write_wav

    write_wav(wav, audio)
    with StenoClient(f"127.0.0.1:{server.port}", timeout_s=CALL_TIMEOUT_S) as client:
        events = list(client.stream(wav, formats=("vtt",), chunk_bytes=16 * 1024))
        windows = [e for e in events if isinstance(e, StreamWindow)]
        (end,) = [e for e in events if isinstance(e, StreamEnd)]
        assert events[-1] is end and len(windows) >= 2
        assert end.segment_count == sum(len(w.segments) for w in windows)
        assert end.outputs["vtt"].startswith("WEBVTT")
        assert end.duration_s == pytest.approx(audio.size / 16000, abs=0.05)
        text = normalize_text(" ".join(s.text for w in windows for s in w.segments))
        assert text.count("dashwood") == 2

        # A caller that stops reading ends the call: the server drops what is left.
        stream = client.stream(wav, chunk_bytes=16 * 1024)
        first = next(stream)
        assert isinstance(first, StreamWindow)
        stream.close()
    assert server.core.wait_idle(60)
    wait_until(lambda: tiny_engine.stats().queued_windows == 0, 60, "dropped windows")
    assert server.admission.reserved_s() == 0.0


def test_client_reads_the_retry_hint_and_watches_progress(serve, tiny_engine, utterances):
    server = serve(max_queue_audio_s=5.0, long_call_reserve_s=5.0)
    target = f"127.0.0.1:{server.port}"
    with StenoClient(target, timeout_s=CALL_TIMEOUT_S) as client, \
            EncoderGate(tiny_engine.runner) as gate:
        admitted = threading.Thread(target=client.transcribe, args=(utterances[1].path,))
        admitted.start()
        assert gate.entered.wait(60)
        with pytest.raises(grpc.RpcError) as refused:
            client.transcribe(utterances[4].path)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0.1 <= retry_after_s(refused.value) <= 60
        gate.open()
        admitted.join(CALL_TIMEOUT_S)

    board = ProgressBoard()
    job = serve(progress=board, mode="job")
    snapshots = []
    with StenoClient(f"127.0.0.1:{job.port}", timeout_s=60) as client:
        watcher = threading.Thread(target=lambda: snapshots.extend(client.watch_progress()))
        watcher.start()
        board.update(state="running", files_total=2, audio_s_total=10.0)
        board.file_done(FileFailure("s3://in/x.wav", "x.wav: corrupt"))
        board.add_audio(10.0)
        board.file_done()
        board.update(state="succeeded", finished=True)
        watcher.join(60)
    assert not watcher.is_alive()
    last = snapshots[-1]
    assert last.finished and last.state == "succeeded" and last.files_done == 2
    assert last.failures == (FileFailure("s3://in/x.wav", "x.wav: corrupt"),)


# ------------------------------------------------------------------ commands


def _steno(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "steno_inference.cli", *args],
        capture_output=True, text=True, timeout=CALL_TIMEOUT_S, env=env,
    )


def test_steno_serve_and_steno_client_commands(tmp_path: Path, utterances):
    port = free_port()
    token_file = tmp_path / "tokens"
    token_file.write_text("# accepted tokens\ncli-test-token\n")
    log = tmp_path / "serve.log"
    with open(log, "w") as log_handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "steno_inference.cli", "serve", "--host", "127.0.0.1",
             "--port", str(port), "--device", "cpu", "--batch-size", "4",
             "--metrics-port", "0", "--auth-token-file", str(token_file)],
            stdout=log_handle, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
    target = f"127.0.0.1:{port}"
    try:
        with StenoClient(target, timeout_s=5) as probe:
            def serving() -> bool:
                if process.poll() is not None:
                    raise AssertionError(f"steno serve exited: {log.read_text()}")
                try:
                    return probe.health() == "SERVING"
                except grpc.RpcError:
                    return False

            wait_until(serving, SERVER_START_S, "steno serve to report SERVING")

        common = ["--target", target, "--token-file", str(token_file)]
        health = _steno("client", "health", *common)
        assert (health.returncode, health.stdout.strip()) == (0, "SERVING"), health.stderr

        out = tmp_path / "out"
        done = _steno("client", "transcribe", str(utterances[0].path), "--format", "srt,txt",
                      "--output-dir", str(out), *common)
        assert done.returncode == 0, done.stderr
        stem = utterances[0].path.stem
        assert "dashwood" in (out / f"{stem}.txt").read_text().lower()
        assert (out / f"{stem}.srt").read_text().startswith("1\n00:00:0")

        streamed = _steno("client", "stream", str(utterances[1].path), *common)
        assert streamed.returncode == 0, streamed.stderr
        assert "young man" in streamed.stdout

        info = _steno("client", "info", *common)
        assert json.loads(info.stdout)["models"][0]["name"] == "tiny.en"

        denied = _steno("client", "info", "--target", target,
                        env={k: v for k, v in os.environ.items() if k != "STENO_AUTH_TOKEN"})
        assert denied.returncode == 1
        assert "UNAUTHENTICATED: missing bearer token" in denied.stderr

        bad = _steno("client", "transcribe", str(token_file), *common)
        assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert "draining" in log.read_text()
        assert "cli-test-token" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
