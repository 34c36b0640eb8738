"""Log-mel spectrograms on the engine's device, batched, as Whisper was trained on.

Each window is zero-padded to 30 s and turned into ``n_mels`` × 3000 frames:
a 400-point Hann STFT every 160 samples (10 ms), power spectrum, Slaney mel
filters up to 8 kHz, log10, a floor 8 (×10 dB) below the window's maximum,
then scaled to about [-1, 1]. Doing this with ``torch.stft`` on the GPU keeps
the CPU free for decoding audio: the host only packs PCM into one pinned
buffer, copied to the device in one transfer (150 minutes of audio, 576 MB of
float32, in ~30 ms), and 300 windows' spectrograms take a few milliseconds.

This module imports neither PyAV nor the voice-activity model, so the runner
can take PCM on machines that have only torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SAMPLE_RATE = 16_000  # Hz: Whisper's input rate (the same as steno_inference.audio's)
CHUNK_LENGTH_S = 30  # one window
N_SAMPLES = CHUNK_LENGTH_S * SAMPLE_RATE  # 480000 samples in a window
N_FFT = 400  # 25 ms analysis window
HOP_LENGTH = 160  # 10 ms between frames
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 frames in a 30 s window
LOG_FLOOR_BELOW_MAX = 8.0  # log10 units kept below the loudest bin (80 dB)


def mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-normalised mel filter bank, shape (n_fft // 2 + 1, n_mels)."""
    from transformers.audio_utils import mel_filter_bank

    filters: np.ndarray = mel_filter_bank(
        num_frequency_bins=1 + N_FFT // 2,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return filters.astype(np.float32)


class LogMel:
    """Computes batches of log-mel features on one device."""

    def __init__(self, n_mels: int, device: torch.device) -> None:
        self.n_mels = n_mels
        self.device = device
        self._filters = torch.from_numpy(mel_filters(n_mels)).to(device).T.contiguous()
        self._window = torch.hann_window(N_FFT, device=device)

    def __call__(self, windows: Sequence[np.ndarray]) -> torch.Tensor:
        """Float32 features (batch, n_mels, 3000) for windows of at most 30 s each."""
        pinned = self.device.type == "cuda"
        batch = torch.zeros(len(windows), N_SAMPLES, dtype=torch.float32, pin_memory=pinned)
        for row, audio in enumerate(windows):
            n = min(int(audio.shape[0]), N_SAMPLES)
            batch[row, :n] = torch.from_numpy(np.ascontiguousarray(audio[:n], dtype=np.float32))
        batch = batch.to(self.device, non_blocking=pinned)
        stft = torch.stft(batch, N_FFT, HOP_LENGTH, window=self._window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = self._filters @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - LOG_FLOOR_BELOW_MAX)
        return (log_spec + 4.0) / 4.0
