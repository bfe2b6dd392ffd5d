"""The few-shot ResNet-12 (MetaOptNet, Lee et al. 2019; Tian et al. 2020; learn2learn), an
ordinary ``nn.Module`` that the generic backbone path meta-learns unmodified.

Four residual blocks, each three 3x3 conv -> batch norm -> leaky ReLU(0.1) (the last
without its ReLU before the sum), a 1x1 conv + batch norm shortcut, ReLU after the sum,
a 2x2 max-pool, and optionally DropBlock; then a global average pool and a linear
classifier. Widths 64-160-320-640 by default (``widths`` makes a small one for CPU tests).
It works at any input of at least 16x16 (28x28 Omniglot, 84x84 mini-ImageNet): four
poolings and the average pool take any size down to one feature vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metasuite.errors import ConfigError

DEFAULT_WIDTHS = (64, 160, 320, 640)
MAX_WIDTH = 8192
"""As config.AT_MOST's cnn_num_filters: a typo is one line, not an allocation failure."""
NEGATIVE_SLOPE = 0.1


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al. 2018): drop contiguous ``block_size`` squares of each
    feature map with probability ``rate`` per unit, then rescale. Draws from the global
    generator, which the backbone seeds per task, so masks are reproducible."""

    def __init__(self, rate: float, block_size: int) -> None:
        super().__init__()
        self.rate, self.block_size = rate, block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        _, _, h, w = x.shape
        size = min(self.block_size, h, w)
        valid = (h - size + 1) * (w - size + 1)
        gamma = self.rate / size**2 * (h * w) / valid
        shape = (x.shape[0], x.shape[1], h - size + 1, w - size + 1)
        seeds = (torch.rand(shape, device=x.device) < gamma).to(x)
        # A block grows from each seed toward the bottom right: pad by size - 1 and
        # max-pool with a size x size window, which gives back an h x w mask.
        seeds = F.pad(seeds, (size - 1, size - 1, size - 1, size - 1))
        keep = 1.0 - F.max_pool2d(seeds, size, stride=1)
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))


class ResidualBlock(nn.Module):
    """Three conv3x3-BN(-LeakyReLU) layers plus a 1x1-conv-BN shortcut, pooled by 2."""

    def __init__(self, cin: int, cout: int, drop_rate: float, drop_block: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv3 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.drop = DropBlock(drop_rate, drop_block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)), NEGATIVE_SLOPE)
        out = F.leaky_relu(self.bn2(self.conv2(out)), NEGATIVE_SLOPE)
        out = self.bn3(self.conv3(out))
        out = F.leaky_relu(out + self.shortcut(x), NEGATIVE_SLOPE)
        return self.drop(F.max_pool2d(out, 2))


class ResNet12(nn.Module):
    """Four residual blocks, a global average pool and a linear classifier."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        dropblock_rate: float = 0.0,
        dropblock_size: int = 5,
    ) -> None:
        super().__init__()
        blocks, cin = [], in_channels
        for cout in widths:
            blocks.append(ResidualBlock(cin, cout, dropblock_rate, dropblock_size))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(x).mean(dim=(2, 3))
        return self.classifier(features)


def resnet12(
    input_shape: Sequence[int],
    num_classes: int,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    dropblock_rate: float = 0.0,
    dropblock_size: int = 5,
) -> ResNet12:
    """The ``backbone: "resnet12"`` factory (``backbone_kwargs``: ``widths``,
    ``dropblock_rate``, ``dropblock_size``)."""
    channels, height, width = input_shape
    if len(widths) != 4 or any(not isinstance(w, int) or not 1 <= w <= MAX_WIDTH for w in widths):
        raise ConfigError(
            f"backbone_kwargs: widths must be four integers in [1, {MAX_WIDTH}], got {list(widths)}"
        )
    if not 0.0 <= dropblock_rate < 1.0:
        raise ConfigError(
            f"backbone_kwargs: dropblock_rate must be in [0, 1), got {dropblock_rate}"
        )
    if not isinstance(dropblock_size, int) or dropblock_size < 1:
        raise ConfigError(
            f"backbone_kwargs: dropblock_size must be an integer >= 1, got {dropblock_size}"
        )
    if min(height, width) < 16:
        raise ConfigError(
            f"backbone resnet12: its four 2x2 poolings need images of at least 16x16, got "
            f"{height}x{width}"
        )
    return ResNet12(channels, num_classes, tuple(widths), dropblock_rate, dropblock_size)


__all__ = ["DEFAULT_WIDTHS", "DropBlock", "ResNet12", "ResidualBlock", "resnet12"]
