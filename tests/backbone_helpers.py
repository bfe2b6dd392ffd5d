"""User-style backbone factories for the backbone tests (importable as
``backbone_helpers:<factory>``, tests/ being on the path, the way a user's own file
beside a config is on PYTHONPATH).

:func:`reference_conv` is the reference network written as a plain ``nn.Module``, with
the same parameter names as :class:`metasuite.learner.models.Backbone`
(``conv<i>``/``norm<i>``/``linear``), so parameters of one path load into the other and
the generic path can be held to the reference path number for number.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceConv(nn.Module):
    """stages x (3x3 conv, padding 1 -> BatchNorm2d -> leaky ReLU(0.01) -> 2x2 max-pool),
    then a linear classifier: the reference network with max-pooling and padding."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, filters: int, stages: int):
        super().__init__()
        self.stages = stages
        cin, h, w = input_shape
        for i in range(stages):
            setattr(self, f"conv{i}", nn.Conv2d(cin, filters, 3, padding=1))
            setattr(self, f"norm{i}", nn.BatchNorm2d(filters))
            cin, h, w = filters, h // 2, w // 2
        self.linear = nn.Linear(cin * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.stages):
            x = getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(x))
            x = F.max_pool2d(F.leaky_relu(x, 0.01), 2)
        return self.linear(x.flatten(1))


def reference_conv(
    input_shape: Sequence[int], num_classes: int, filters: int = 6, stages: int = 3
) -> nn.Module:
    return ReferenceConv(input_shape, num_classes, filters, stages)


class TinyNet(nn.Module):
    """A ten-line user network: conv -> BN -> ReLU -> pool, dropout, linear head."""

    def __init__(self, channels: int, num_classes: int, width: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tiny_net(
    input_shape: Sequence[int], num_classes: int, width: int = 8, dropout: float = 0.0
) -> nn.Module:
    return TinyNet(input_shape[0], num_classes, width, dropout)


def two_conv_net(
    input_shape: Sequence[int], num_classes: int, width: int = 6, dropout: float = 0.3
) -> nn.Module:
    """Two conv-BN-ReLU-pool stages, dropout and a linear head (ten tensors)."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout),
        nn.Linear(width * (input_shape[1] // 4) * (input_shape[2] // 4), num_classes),
    )  # fmt: skip


# ---------------------------------------------------------------- bad factories
def raises(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    raise RuntimeError("no GPU here")


def not_a_module(input_shape: Sequence[int], num_classes: int) -> object:
    return "a string"


def wrong_logits(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes + 1))


class InPlaceAfterSigmoid(nn.Module):
    """Scales sigmoid's output in place: sigmoid's backward needs that output, so the
    gradient cannot be taken (the classic in-place mistake)."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.sigmoid(self.linear(x.flatten(1)))
        hidden.mul_(2.0)
        return hidden


def in_place(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return InPlaceAfterSigmoid(c * h * w, num_classes)


class DistanceHead(nn.Module):
    """Logits as negative distances to learned class centres by ``torch.cdist``, whose
    backward has no derivative of its own in torch: first order works, second order
    cannot."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(features, 8)
        self.centres = nn.Parameter(torch.randn(num_classes, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(self.embed(x.flatten(1)), self.centres)


def distance_head(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return DistanceHead(c * h * w, num_classes)


class InPlaceBuffer(nn.Module):
    """Updates a buffer in place before using it (a hand-written running scale): the
    graph of one pass still needs the buffer as it was when the next pass changes it."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, num_classes)
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale.mul_(1.0)
        return self.linear(x.flatten(1)) * self.scale


def in_place_buffer(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    c, h, w = input_shape
    return InPlaceBuffer(c * h * w, num_classes)
