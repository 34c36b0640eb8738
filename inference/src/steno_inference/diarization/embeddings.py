"""CAM++ speaker embeddings (3D-Speaker's context-aware masking TDNN), batched on a device.

The network follows the CAM++ paper (Wang et al., Interspeech 2023): a small 2-D
residual front end over the 80 mel bins (FCM) turns ``(frames, bins)`` into a
320-channel sequence; a strided TDNN halves the frame rate; three densely
connected blocks (12, 24 and 16 layers, growth 32) each end in a transition
that halves the channels; every dense layer's output is gated by a
context-aware mask computed from the sequence mean plus 100-frame segment
means; statistics pooling (mean and standard deviation over time) and a linear
layer with a non-affine batch norm give the 192-d embedding.

Parameter names match the state dict shipped as ``campplus_cn_en_common.pt``
(``head.layer1.0.conv1.weight``, ``xvector.block2.tdnnd7.cam_layer.linear1.bias``,
...), so it loads with ``strict=True``: a mismatch in the architecture is an
error at load time, never silently random weights.

Inference detail: a dense block keeps one preallocated channel buffer and each
layer writes its 32 new channels into it, instead of concatenating a growing
tensor per layer (the same result with one allocation per block).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from steno_inference.diarization.fbank import mean_normalise

FEATURE_BINS = 80  # mel bins of the input (see fbank.NUM_MEL_BINS)
EMBEDDING_DIM = 192  # size of the shipped model's speaker embedding
FCM_CHANNELS = 32  # channels of the 2-D front end
FCM_OUT_CHANNELS = FCM_CHANNELS * (FEATURE_BINS // 8)  # 320: three stride-2 steps over bins
TDNN_CHANNELS = 128  # channels after the first, strided TDNN layer
GROWTH_CHANNELS = 32  # channels each dense layer adds
BOTTLENECK_CHANNELS = 4 * GROWTH_CHANNELS  # 128: the 1x1 bottleneck inside a dense layer
CAM_REDUCTION = 2  # the masking branch's hidden channels: bottleneck / 2
CAM_SEGMENT_FRAMES = 100  # segment pooling length of the context-aware mask (frames)
# (layers, kernel size, dilation) of the three dense TDNN blocks
DENSE_BLOCKS: tuple[tuple[int, int, int], ...] = ((12, 3, 1), (24, 3, 2), (16, 3, 2))


class _BatchNormRelu(nn.Module):
    """Batch norm then ReLU; the attribute name ``batchnorm`` matches the state dict."""

    def __init__(self, channels: int, *, dims: int = 1) -> None:
        super().__init__()
        self.batchnorm: nn.Module = (
            nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed: torch.Tensor = self.batchnorm(x)
        return F.relu(normed)


class _ResidualBlock2d(nn.Module):
    """Two 3x3 convolutions with a skip path; ``stride`` subsamples the frequency axis."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        # Named "shortcut" with children "0" (conv) and "1" (norm), as in the state dict.
        self.shortcut = nn.Sequential()
        if stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels, channels, 1, stride=(stride, 1), bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _FrontEnd(nn.Module):
    """FCM: 2-D convolutions over (bins, frames), flattened to a channel sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, FCM_CHANNELS, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(FCM_CHANNELS)
        self.layer1 = nn.Sequential(
            _ResidualBlock2d(FCM_CHANNELS, 2), _ResidualBlock2d(FCM_CHANNELS, 1)
        )
        self.layer2 = nn.Sequential(
            _ResidualBlock2d(FCM_CHANNELS, 2), _ResidualBlock2d(FCM_CHANNELS, 1)
        )
        self.conv2 = nn.Conv2d(FCM_CHANNELS, FCM_CHANNELS, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(FCM_CHANNELS)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # (batch, frames, bins) -> (batch, 1, bins, frames): bins are the image height.
        x = features.transpose(1, 2).unsqueeze(1)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = F.relu(self.bn2(self.conv2(x)))
        batch, channels, bins, frames = x.shape
        return x.reshape(batch, channels * bins, frames)


class _StridedTdnn(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 5, stride=2, padding=2, bias=False)
        self.nonlinear = _BatchNormRelu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.nonlinear(self.linear(x))
        return out


class _ContextMask(nn.Module):
    """A local TDNN whose output is gated by a mask from utterance and segment context."""

    def __init__(self, kernel_size: int, dilation: int) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation  # keeps the frame count
        self.linear_local = nn.Conv1d(
            BOTTLENECK_CHANNELS,
            GROWTH_CHANNELS,
            kernel_size,
            padding=padding,
            dilation=dilation,
            bias=False,
        )
        self.linear1 = nn.Conv1d(BOTTLENECK_CHANNELS, BOTTLENECK_CHANNELS // CAM_REDUCTION, 1)
        self.linear2 = nn.Conv1d(BOTTLENECK_CHANNELS // CAM_REDUCTION, GROWTH_CHANNELS, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        # Mean of each 100-frame segment (the last one partial), spread back over its frames.
        segments = F.avg_pool1d(x, CAM_SEGMENT_FRAMES, CAM_SEGMENT_FRAMES, ceil_mode=True)
        segment_context = segments.repeat_interleave(CAM_SEGMENT_FRAMES, dim=-1)[..., :frames]
        context = x.mean(dim=-1, keepdim=True) + segment_context
        mask = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        local: torch.Tensor = self.linear_local(x)
        return local * mask


class _DenseLayer(nn.Module):
    def __init__(self, in_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _BatchNormRelu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, BOTTLENECK_CHANNELS, 1, bias=False)
        self.nonlinear2 = _BatchNormRelu(BOTTLENECK_CHANNELS)
        self.cam_layer = _ContextMask(kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))
        return out


class _DenseBlock(nn.Module):
    """Layers named ``tdnnd1..N``; each sees every channel produced before it."""

    def __init__(self, in_channels: int, layers: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = in_channels + layers * GROWTH_CHANNELS
        self.layer_names = [f"tdnnd{index + 1}" for index in range(layers)]
        for index, name in enumerate(self.layer_names):
            width = in_channels + index * GROWTH_CHANNELS
            self.add_module(name, _DenseLayer(width, kernel_size, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, frames = x.shape
        buffer = x.new_empty(batch, self.out_channels, frames)
        buffer[:, : self.in_channels] = x
        width = self.in_channels
        for name in self.layer_names:
            layer = self.get_submodule(name)
            buffer[:, width : width + GROWTH_CHANNELS] = layer(buffer[:, :width])
            width += GROWTH_CHANNELS
        return buffer


class _Transition(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.nonlinear = _BatchNormRelu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(self.nonlinear(x))
        return out


class _AffinelessNorm(nn.Module):
    """The embedding's final batch norm (no scale or shift), named like the state dict."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.batchnorm = nn.BatchNorm1d(channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.batchnorm(x)
        return out


class _EmbeddingLayer(nn.Module):
    """Pooled statistics to the embedding: a 1x1 projection and a non-affine batch norm."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, EMBEDDING_DIM, 1, bias=False)
        self.nonlinear = _AffinelessNorm(EMBEDDING_DIM)

    def forward(self, stats: torch.Tensor) -> torch.Tensor:
        projected = self.linear(stats.unsqueeze(-1)).squeeze(-1)
        out: torch.Tensor = self.nonlinear(projected)
        return out


def _statistics_pooling(x: torch.Tensor) -> torch.Tensor:
    """Mean and (unbiased) standard deviation over time, concatenated."""
    mean = x.mean(dim=-1)
    if x.shape[-1] < 2:  # a one-frame input has no spread; 3D-Speaker uses a small constant
        return torch.cat([mean, torch.full_like(mean, 1e-2)], dim=-1)
    return torch.cat([mean, x.std(dim=-1, unbiased=True)], dim=-1)


class CamPlusPlus(nn.Module):
    """The CAM++ speaker-embedding network: ``(batch, frames, 80)`` → ``(batch, 192)``."""

    def __init__(self) -> None:
        super().__init__()
        self.head = _FrontEnd()
        self.xvector = nn.Module()
        self.xvector.add_module("tdnn", _StridedTdnn(FCM_OUT_CHANNELS, TDNN_CHANNELS))
        channels = TDNN_CHANNELS
        self._stages: list[str] = ["tdnn"]
        for index, (layers, kernel_size, dilation) in enumerate(DENSE_BLOCKS, start=1):
            block = _DenseBlock(channels, layers, kernel_size, dilation)
            self.xvector.add_module(f"block{index}", block)
            channels = block.out_channels
            self.xvector.add_module(f"transit{index}", _Transition(channels, channels // 2))
            channels //= 2
            self._stages += [f"block{index}", f"transit{index}"]
        self.xvector.add_module("out_nonlinear", _BatchNormRelu(channels))
        self._stages.append("out_nonlinear")
        self.xvector.add_module("dense", _EmbeddingLayer(2 * channels))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.head(features)
        for name in self._stages:
            x = self.xvector.get_submodule(name)(x)
        out: torch.Tensor = self.xvector.get_submodule("dense")(_statistics_pooling(x))
        return out

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, torch.Tensor], device: torch.device
    ) -> CamPlusPlus:
        """The network with ``state`` loaded strictly, in eval mode, on ``device``."""
        model = cls()
        model.load_state_dict(dict(state), strict=True)
        return model.eval().to(device)


def embed_frame_spans(
    model: CamPlusPlus,
    features: torch.Tensor,
    spans: list[tuple[int, int]],
    *,
    batch_size: int,
    half_precision: bool = False,
) -> torch.Tensor:
    """Embeddings ``(len(spans), 192)`` of ``features[start:start + count]`` for each span.

    ``features`` is the whole recording's fbank on the model's device; each span is
    mean-normalised on its own. Spans of equal length are stacked into one batch
    (CAM++'s pooling makes padding change the result, so lengths are never mixed);
    most windows share the standard length, so there are few distinct batches.
    """
    device = features.device
    out = torch.zeros(len(spans), EMBEDDING_DIM, device=device)
    by_length: dict[int, list[int]] = {}
    for index, (_, count) in enumerate(spans):
        by_length.setdefault(count, []).append(index)
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=half_precision)
    with torch.inference_mode(), autocast:
        for count, members in sorted(by_length.items()):
            offsets = torch.arange(count, device=device)
            for first in range(0, len(members), batch_size):
                chosen = members[first : first + batch_size]
                starts = torch.tensor([spans[i][0] for i in chosen], device=device)
                batch = features[starts[:, None] + offsets[None, :]]  # (batch, count, bins)
                batch = mean_normalise(batch)  # each window on its own
                out[torch.tensor(chosen, device=device)] = model(batch).float()
    return out
