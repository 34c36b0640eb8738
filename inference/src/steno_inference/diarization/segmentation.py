"""Speech activity from pyannote's segmentation-3.0, run over 10 s chunks batched on a device.

The network is PyanNet as segmentation-3.0 was trained: SincNet (80 parametric
band-pass filters of 251 taps, stride 10, then two 5-tap convolutions, each
stage max-pooled by 3 and instance-normalised), a 4-layer bidirectional LSTM
(128 units per direction), two 128-unit linear layers and a 7-class
"powerset" classifier over 10 s chunks: class 0 is silence, 1-3 one of three
local speakers, 4-6 a pair of them. Written here in plain torch with the
checkpoint's parameter names (loaded ``strict=True``), so the GPU path needs
neither pyannote.audio nor Lightning nor asteroid; only the weights file.

How it is used: the recording is cut into 10 s chunks every
:data:`DEFAULT_CHUNK_STEP_FRAMES` output frames (about 2.5 s, so each moment
is seen by four chunks), the chunks are views of one padded tensor (no copy)
fed in batches, and each chunk's per-frame speech probability (1 - P(silence))
is overlap-added on one global frame grid with a Hamming weight, which trusts
a chunk's middle more than its edges. The chunk step is a whole number of
output frames (270 samples, 16.875 ms), so every chunk's frames land exactly on
the global grid. Only speech activity is taken from this model: its local
speaker labels merged two real voices inside a chunk on this project's test
recording, so speakers come from CAM++ embeddings instead (see ``pipeline``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000  # Hz
CHUNK_S = 10.0  # segmentation-3.0's training chunk duration
CHUNK_SAMPLES = int(CHUNK_S * SAMPLE_RATE)  # 160000
SINC_FILTERS = 80  # 40 cosine (even) + 40 sine (odd) band-pass filters
SINC_TAPS = 251
SINC_STRIDE = 10
SINC_MIN_LOW_HZ = 50.0
SINC_MIN_BAND_HZ = 50.0
POOL = 3  # every SincNet stage is max-pooled by 3
CONV_TAPS = 5
CONV_CHANNELS = 60
LSTM_HIDDEN = 128
LSTM_LAYERS = 4
LINEAR_HIDDEN = 128
POWERSET_CLASSES = 7  # {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}
SILENCE_CLASS = 0
FRAME_STEP_SAMPLES = SINC_STRIDE * POOL**3  # 270: one output frame per 16.875 ms
# Receptive field of one output frame, walked back from the last pooling to the samples:
# pool 3 → 3, conv 5 → 7, pool 3 → 21, conv 5 → 25, pool 3 → 75, sinc 251 stride 10 → 991.
RECEPTIVE_FIELD_SAMPLES = (
    ((3 + CONV_TAPS - 1) * POOL + CONV_TAPS - 1) * POOL - 1
) * SINC_STRIDE + SINC_TAPS
FRAME_CENTER_OFFSET_SAMPLES = (RECEPTIVE_FIELD_SAMPLES - 1) / 2  # 495.0
DEFAULT_CHUNK_STEP_FRAMES = 148  # 148 * 270 = 39960 samples ≈ 2.5 s between chunk starts


def frames_per_chunk(num_samples: int = CHUNK_SAMPLES) -> int:
    """Output frames of the network for ``num_samples`` input samples (589 for 10 s)."""
    frames = (num_samples - SINC_TAPS) // SINC_STRIDE + 1
    frames = frames // POOL
    frames = (frames - CONV_TAPS + 1) // POOL
    return (frames - CONV_TAPS + 1) // POOL


FRAMES_PER_CHUNK = frames_per_chunk()  # 589


def frame_center_s(frame: torch.Tensor | int) -> torch.Tensor | float:
    """Time (s) at the centre of a global output frame's receptive field."""
    return (frame * FRAME_STEP_SAMPLES + FRAME_CENTER_OFFSET_SAMPLES) / SAMPLE_RATE


class _SincFilterbank(nn.Module):
    """Band-pass filters parametrised by their low cut-off and bandwidth (SincNet).

    Each filter is the difference of two ideal low-pass filters, windowed by a
    Hamming window; the even (cosine) and odd (sine) halves of the analytic
    filter are both kept. ``n_`` (the half time axis, 2π t) and ``window_`` (the
    half window) are saved in the checkpoint, so they are read from it.
    """

    def __init__(self) -> None:
        super().__init__()
        half = SINC_FILTERS // 2
        self.low_hz_ = nn.Parameter(torch.zeros(half, 1))
        self.band_hz_ = nn.Parameter(torch.zeros(half, 1))
        self.register_buffer("window_", torch.zeros(SINC_TAPS // 2))
        self.register_buffer("n_", torch.zeros(1, SINC_TAPS // 2))

    def filters(self) -> torch.Tensor:
        """``(SINC_FILTERS, 1, SINC_TAPS)`` convolution kernels."""
        n = self.get_buffer("n_")
        window = self.get_buffer("window_")
        low = SINC_MIN_LOW_HZ + self.low_hz_.abs()
        high = torch.clamp(
            low + SINC_MIN_BAND_HZ + self.band_hz_.abs(), SINC_MIN_LOW_HZ, SAMPLE_RATE / 2
        )
        band = high - low  # (half, 1)
        phase_low, phase_high = low @ n, high @ n  # (half, taps // 2)
        even_left = (torch.sin(phase_high) - torch.sin(phase_low)) / (n / 2) * window
        odd_left = (torch.cos(phase_low) - torch.cos(phase_high)) / (n / 2) * window
        even = torch.cat([even_left, 2 * band, even_left.flip(1)], dim=1)
        odd = torch.cat([odd_left, torch.zeros_like(band), -odd_left.flip(1)], dim=1)
        kernels = torch.cat([even, odd], dim=0) / (2 * torch.cat([band, band], dim=0))
        return kernels.unsqueeze(1)


class _SincStage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.filterbank = _SincFilterbank()
        self._kernels: torch.Tensor | None = None  # computed once, after the weights load

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernels is None or self._kernels.device != x.device:
            with torch.no_grad():
                self._kernels = self.filterbank.filters().to(x.device)
        return F.conv1d(x, self._kernels.to(x.dtype), stride=SINC_STRIDE)


class _SincNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wav_norm1d = nn.InstanceNorm1d(1, affine=True)
        self.conv1d = nn.ModuleList(
            [
                _SincStage(),
                nn.Conv1d(SINC_FILTERS, CONV_CHANNELS, CONV_TAPS),
                nn.Conv1d(CONV_CHANNELS, CONV_CHANNELS, CONV_TAPS),
            ]
        )
        self.norm1d = nn.ModuleList(
            [
                nn.InstanceNorm1d(SINC_FILTERS, affine=True),
                nn.InstanceNorm1d(CONV_CHANNELS, affine=True),
                nn.InstanceNorm1d(CONV_CHANNELS, affine=True),
            ]
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x: torch.Tensor = self.wav_norm1d(waveforms)
        for index, (conv, norm) in enumerate(zip(self.conv1d, self.norm1d, strict=True)):
            x = conv(x)  # the first stage is the sinc filterbank
            if index == 0:
                # Rectify the band-pass outputs before pooling, as SincNet does.
                x = x.abs()
            x = F.leaky_relu(norm(F.max_pool1d(x, POOL, POOL)))
        return x


class SegmentationNet(nn.Module):
    """PyanNet: ``(batch, 1, samples)`` → ``(batch, frames, 7)`` powerset log-probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.sincnet = _SincNet()
        self.lstm = nn.LSTM(
            CONV_CHANNELS,
            LSTM_HIDDEN,
            num_layers=LSTM_LAYERS,
            bidirectional=True,
            batch_first=True,
        )
        self.linear = nn.ModuleList(
            [nn.Linear(2 * LSTM_HIDDEN, LINEAR_HIDDEN), nn.Linear(LINEAR_HIDDEN, LINEAR_HIDDEN)]
        )
        self.classifier = nn.Linear(LINEAR_HIDDEN, POWERSET_CLASSES)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = self.sincnet(waveforms).transpose(1, 2)  # (batch, frames, channels)
        x, _ = self.lstm(x)
        for layer in self.linear:
            x = F.leaky_relu(layer(x))
        logits: torch.Tensor = self.classifier(x)
        return F.log_softmax(logits, dim=-1)

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], device: torch.device
    ) -> SegmentationNet:
        """The network with ``state`` loaded strictly, in eval mode, on ``device``."""
        model = cls()
        model.load_state_dict(dict(state), strict=True)
        return model.eval().to(device)


class SpeechActivity:
    """Per-frame speech probability of a whole recording, on the global 16.875 ms grid."""

    def __init__(
        self,
        model: SegmentationNet,
        device: torch.device,
        *,
        batch_size: int,
        chunk_step_frames: int = DEFAULT_CHUNK_STEP_FRAMES,
        half_precision: bool = False,
    ) -> None:
        if not 1 <= chunk_step_frames <= FRAMES_PER_CHUNK:
            raise ValueError(f"chunk_step_frames must be 1..{FRAMES_PER_CHUNK}")
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.chunk_step_frames = chunk_step_frames
        self.half_precision = half_precision
        # A chunk's edges see less context: weigh its frames by a Hamming window.
        self._weights = torch.hamming_window(FRAMES_PER_CHUNK, periodic=False, device=device)

    def num_chunks(self, num_samples: int) -> int:
        step = self.chunk_step_frames * FRAME_STEP_SAMPLES
        return max(1, math.ceil(max(0, num_samples - CHUNK_SAMPLES) / step) + 1)

    def _chunk_views(self, audio: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """``(index of first chunk, (chunks, samples) view)`` covering ``audio``.

        Chunks that lie inside the audio are a strided view of it (no copy); only
        the last few, which run past its end, are zero-padded copies.
        """
        step = self.chunk_step_frames * FRAME_STEP_SAMPLES
        total = self.num_chunks(audio.numel())
        inside = 0 if audio.numel() < CHUNK_SAMPLES else (audio.numel() - CHUNK_SAMPLES) // step + 1
        inside = min(inside, total)
        if inside:
            yield 0, audio[: (inside - 1) * step + CHUNK_SAMPLES].unfold(0, CHUNK_SAMPLES, step)
        if total > inside:
            tail = audio[inside * step :]
            padded_samples = (total - inside - 1) * step + CHUNK_SAMPLES
            tail = F.pad(tail, (0, padded_samples - tail.numel()))
            yield inside, tail.unfold(0, CHUNK_SAMPLES, step)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """Speech probabilities (0..1) of global frames 0..F-1 covering ``audio``."""
        audio = audio.to(self.device, torch.float32)
        total_frames = (self.num_chunks(audio.numel()) - 1) * self.chunk_step_frames
        total_frames += FRAMES_PER_CHUNK
        weighted = torch.zeros(total_frames, device=self.device)
        weight_sum = torch.zeros(total_frames, device=self.device)
        offsets = torch.arange(FRAMES_PER_CHUNK, device=self.device)
        autocast = torch.autocast(
            self.device.type, dtype=torch.float16, enabled=self.half_precision
        )
        with torch.inference_mode(), autocast:
            for base, chunks in self._chunk_views(audio):
                for first in range(0, chunks.shape[0], self.batch_size):
                    batch = chunks[first : first + self.batch_size].unsqueeze(1)
                    log_probs = self.model(batch).float()
                    speech = 1.0 - log_probs[..., SILENCE_CLASS].exp()  # (batch, frames)
                    starts = base + first + torch.arange(batch.shape[0], device=self.device)
                    index = starts[:, None] * self.chunk_step_frames + offsets[None, :]
                    weighted.index_add_(0, index.reshape(-1), (speech * self._weights).reshape(-1))
                    weight_sum.index_add_(
                        0, index.reshape(-1), self._weights.expand_as(speech).reshape(-1)
                    )
        return weighted / weight_sum.clamp_min(torch.finfo(torch.float32).tiny)
