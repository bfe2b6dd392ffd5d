"""What a task's examples look like to a network: the one place the modalities differ
for the learner layer.

:func:`input_spec` gives the backbone factory its ``input_shape`` and any extra keyword
arguments (text: the tokenizer's ``vocab_size`` and ``pad_token_id``), and the start-up
probe a small random batch of the right kind (float images, or token ids with padding),
so ``build_backbone`` has no modality branches of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from metasuite.config import ExperimentConfig


@dataclass(frozen=True)
class InputSpec:
    """``shape``: the factory's ``input_shape``; ``factory_kwargs``: added to
    ``backbone_kwargs``; ``probe(n, generator)``: a batch of ``n`` random examples."""

    modality: str
    shape: tuple[int, ...]
    probe: Callable[[int, torch.Generator], torch.Tensor]
    factory_kwargs: dict[str, Any] = field(default_factory=dict)


def input_spec(cfg: ExperimentConfig) -> InputSpec:
    if cfg.modality == "text":
        return _text_spec(cfg)
    shape = (cfg.image_channels, cfg.image_height, cfg.image_width)
    return InputSpec("image", shape, lambda n, g: torch.rand((n, *shape), generator=g))


def _text_spec(cfg: ExperimentConfig) -> InputSpec:
    from metasuite.data.text.load import tokenizer_for

    tokenizer = tokenizer_for(cfg)
    vocab, pad, length = tokenizer.vocab_size, tokenizer.pad_id, cfg.max_length

    def probe(n: int, generator: torch.Generator) -> torch.Tensor:
        """Random non-pad ids, the second half of the rows padded after a few tokens."""
        low = min(5, vocab - 1)
        ids = torch.randint(low, vocab, (n, length), generator=generator)
        ids[n // 2 :, 3:] = pad
        return ids

    return InputSpec("text", (length,), probe, {"vocab_size": vocab, "pad_token_id": pad})


__all__ = ["InputSpec", "input_spec"]
