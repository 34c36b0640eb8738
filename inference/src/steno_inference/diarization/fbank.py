"""Kaldi-style log mel filterbank features in torch, for the speaker-embedding model.

CAM++ was trained on Kaldi's ``compute-fbank-feats`` output with these settings:
25 ms Povey-windowed frames every 10 ms, no dither, DC offset removed,
pre-emphasis 0.97, a 512-point power spectrum, 80 triangular mel bins between
20 Hz and Nyquist on Kaldi's mel scale (``1127 ln(1 + f/700)``), natural log
floored at float32 epsilon, ``snip_edges`` (only whole frames). The features
are then mean-normalised per embedding window (:func:`mean_normalise`), which
also makes the absolute signal scale irrelevant: a gain is an additive
constant in log space and the mean removes it.

The whole recording is turned into one feature matrix once (block by block,
so a long recording never needs its full FFT in memory); embedding windows
are then slices of it, because Kaldi frames starting on the 10 ms grid are the
same frames whichever window they belong to.
"""

from __future__ import annotations

import math

import torch

SAMPLE_RATE = 16000  # Hz
FRAME_LENGTH_SAMPLES = 400  # 25 ms at 16 kHz
FRAME_SHIFT_SAMPLES = 160  # 10 ms at 16 kHz
FRAMES_PER_S = SAMPLE_RATE / FRAME_SHIFT_SAMPLES  # 100.0
FFT_SIZE = 512  # FRAME_LENGTH_SAMPLES rounded up to a power of two, as Kaldi does
NUM_MEL_BINS = 80
LOW_FREQ_HZ = 20.0
HIGH_FREQ_HZ = SAMPLE_RATE / 2  # Kaldi's high_freq=0 means Nyquist
PREEMPHASIS = 0.97
POVEY_EXPONENT = 0.85  # Povey's window: a Hann window raised to this power
LOG_FLOOR = torch.finfo(torch.float32).eps  # Kaldi floors energies at FLT_EPSILON
BLOCK_FRAMES = 30_000  # 5 minutes of frames per FFT block: bounds the transient memory


def num_frames(num_samples: int) -> int:
    """Whole 25 ms frames that fit in ``num_samples`` (Kaldi's ``snip_edges``)."""
    if num_samples < FRAME_LENGTH_SAMPLES:
        return 0
    return 1 + (num_samples - FRAME_LENGTH_SAMPLES) // FRAME_SHIFT_SAMPLES


def _kaldi_mel(freq_hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq_hz / 700.0)


def mel_filterbank(device: torch.device) -> torch.Tensor:
    """Kaldi's triangular mel filters as a ``(FFT_SIZE // 2 + 1, NUM_MEL_BINS)`` matrix.

    Kaldi builds the triangles in the mel domain over the FFT bins below Nyquist;
    the Nyquist bin gets no weight, as in Kaldi.
    """
    num_fft_bins = FFT_SIZE // 2
    bin_hz = SAMPLE_RATE / FFT_SIZE
    mel_low = _kaldi_mel(torch.tensor(LOW_FREQ_HZ, dtype=torch.float64))
    mel_high = _kaldi_mel(torch.tensor(HIGH_FREQ_HZ, dtype=torch.float64))
    delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    edges = mel_low + delta * torch.arange(NUM_MEL_BINS + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    mel = _kaldi_mel(bin_hz * torch.arange(num_fft_bins, dtype=torch.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)  # (bins, fft bins)
    full = torch.zeros(NUM_MEL_BINS, num_fft_bins + 1, dtype=torch.float64)
    full[:, :num_fft_bins] = weights
    return full.T.contiguous().to(device=device, dtype=torch.float32)


def povey_window(device: torch.device) -> torch.Tensor:
    n = torch.arange(FRAME_LENGTH_SAMPLES, dtype=torch.float64)
    hann = 0.5 - 0.5 * torch.cos(2.0 * math.pi * n / (FRAME_LENGTH_SAMPLES - 1))
    return hann.pow(POVEY_EXPONENT).to(device=device, dtype=torch.float32)


class KaldiFbank:
    """Computes log mel features of a whole recording on one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._window = povey_window(device)
        self._mel = mel_filterbank(device)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """``(num_frames(len(audio)), NUM_MEL_BINS)`` log mel energies of mono ``audio``."""
        if audio.dim() != 1:
            raise ValueError(f"expected mono audio of shape (samples,), not {tuple(audio.shape)}")
        total = num_frames(audio.numel())
        out = torch.empty(total, NUM_MEL_BINS, device=self.device, dtype=torch.float32)
        signal = audio.to(device=self.device, dtype=torch.float32)
        for first in range(0, total, BLOCK_FRAMES):
            count = min(BLOCK_FRAMES, total - first)
            start = first * FRAME_SHIFT_SAMPLES
            stop = start + (count - 1) * FRAME_SHIFT_SAMPLES + FRAME_LENGTH_SAMPLES
            frames = signal[start:stop].unfold(0, FRAME_LENGTH_SAMPLES, FRAME_SHIFT_SAMPLES)
            out[first : first + count] = self._log_mel(frames)
        return out

    def _log_mel(self, frames: torch.Tensor) -> torch.Tensor:
        frames = frames - frames.mean(dim=1, keepdim=True)  # remove_dc_offset
        # Pre-emphasis inside each frame; Kaldi treats the sample before the first as itself.
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = (frames - PREEMPHASIS * previous) * self._window
        spectrum = torch.fft.rfft(frames, n=FFT_SIZE, dim=1)
        power = spectrum.real.square() + spectrum.imag.square()
        return torch.clamp(power @ self._mel, min=LOG_FLOOR).log()


def mean_normalise(features: torch.Tensor) -> torch.Tensor:
    """Subtract each window's mean over time: ``(..., frames, bins)`` in and out."""
    return features - features.mean(dim=-2, keepdim=True)
