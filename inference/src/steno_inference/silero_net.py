"""Silero VAD (v5, 16 kHz) as a plain torch module that scores a whole block of frames at once.

Silero's TorchScript model is called once per 32 ms frame from Python and
keeps its recurrent state inside the module. A 5 s clip is 156 calls of small
torch ops; with many sources at once that loop held the GIL most of the time
and the scheduler thread feeding the GPU starved.

Only the last step of the network is recurrent. A frame's short-time Fourier
transform and its four convolutions depend on the frame and the 64 samples
before it, which are audio, not state. So this module runs those for every
frame of a block in one batch, then the LSTM over the block as one sequence
(one ``torch.lstm`` call, the same cell Silero steps frame by frame), then the
output head in one batch. The state (the LSTM's h and c, and the last 64
samples) is explicit and owned by the caller, so one module serves any number
of sources and threads at once.

The weights are Silero's own, copied from its TorchScript file with a strict
load: a changed upstream layout fails loudly instead of scoring garbage.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FRAME_SAMPLES = 512  # Silero's frame at 16 kHz
CONTEXT_SAMPLES = 64  # samples of the previous frame each frame sees
HIDDEN = 128  # LSTM width
_STFT_HOP = 128
_STFT_BINS = 129  # filter length 256 -> 256 / 2 + 1 magnitude bins
_STFT_PAD = 64  # reflection padding on the right of each frame, as Silero pads
# (in channels, out channels, stride) of the four encoder convolutions, kernel 3, padding 1
_ENCODER = ((129, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1))


@dataclass
class SileroState:
    """One source's recurrent state between blocks: LSTM h and c, and its last 64 samples."""

    hidden: torch.Tensor  # (1, 1, HIDDEN)
    cell: torch.Tensor  # (1, 1, HIDDEN)
    context: torch.Tensor  # (CONTEXT_SAMPLES,)

    @classmethod
    def initial(cls) -> SileroState:
        """The state of a fresh source: zeros, as Silero's ``reset_states``."""
        return cls(
            torch.zeros(1, 1, HIDDEN), torch.zeros(1, 1, HIDDEN), torch.zeros(CONTEXT_SAMPLES)
        )


class SileroNet(nn.Module):
    """Speech probability per 512-sample frame; stateless, so threads may share one."""

    def __init__(self) -> None:
        super().__init__()
        # The STFT as Silero computes it: a convolution with a fixed real/imaginary basis.
        self.stft_basis: torch.Tensor
        self.register_buffer("stft_basis", torch.zeros(2 * _STFT_BINS, 1, 256))
        self.encoder = nn.ModuleList(
            nn.Conv1d(c_in, c_out, 3, stride=stride, padding=1) for c_in, c_out, stride in _ENCODER
        )
        self.lstm = nn.LSTM(HIDDEN, HIDDEN, batch_first=True)
        self.head = nn.Conv1d(HIDDEN, 1, 1)

    @classmethod
    def from_torchscript(cls, path: Path) -> SileroNet:
        """Silero's 16 kHz network with the weights of its TorchScript file."""
        with warnings.catch_warnings():
            # Silero ships TorchScript; torch's deprecation notice is about the
            # format, which this only reads weights from.
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        source = dict(scripted._model.state_dict())
        renamed = {"stft_basis": source.pop("stft.forward_basis_buffer")}
        for index in range(len(_ENCODER)):
            for kind in ("weight", "bias"):
                renamed[f"encoder.{index}.{kind}"] = source.pop(
                    f"encoder.{index}.reparam_conv.{kind}"
                )
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            renamed[f"lstm.{kind}_l0"] = source.pop(f"decoder.rnn.{kind}")
        for kind in ("weight", "bias"):
            renamed[f"head.{kind}"] = source.pop(f"decoder.decoder.2.{kind}")
        if source:
            raise RuntimeError(f"unexpected tensors in Silero's model: {sorted(source)}")
        net = cls()
        net.load_state_dict(renamed, strict=True)
        net.eval()
        return net

    @torch.inference_mode()
    def forward(
        self, samples: torch.Tensor, state: SileroState
    ) -> tuple[torch.Tensor, SileroState]:
        """Probabilities of the whole frames in ``samples`` (float32, length a multiple of 512)."""
        n_frames = samples.numel() // FRAME_SAMPLES
        if n_frames * FRAME_SAMPLES != samples.numel() or n_frames == 0:
            raise ValueError(
                f"Silero scores whole frames of {FRAME_SAMPLES} samples, got {samples.numel()}"
            )
        signal = torch.cat([state.context, samples])
        # Each frame with the 64 samples before it: (frames, 576).
        frames = signal.unfold(0, CONTEXT_SAMPLES + FRAME_SAMPLES, FRAME_SAMPLES)
        padded = F.pad(frames.unsqueeze(1), (0, _STFT_PAD), mode="reflect")
        spectrum = F.conv1d(padded, self.stft_basis, stride=_STFT_HOP)
        real, imag = spectrum[:, :_STFT_BINS], spectrum[:, _STFT_BINS:]
        x = torch.sqrt(real * real + imag * imag)
        for conv in self.encoder:
            x = F.relu(conv(x))
        # (frames, 128, 1) -> one sequence of frames through the LSTM.
        outputs, (hidden, cell) = self.lstm(x.squeeze(-1).unsqueeze(0), (state.hidden, state.cell))
        logits = self.head(F.relu(outputs.squeeze(0)).unsqueeze(-1))
        probabilities = torch.sigmoid(logits).view(n_frames)
        next_state = SileroState(hidden, cell, samples[-CONTEXT_SAMPLES:].clone())
        return probabilities, next_state
