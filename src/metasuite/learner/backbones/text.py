"""Text networks for the generic backbone path: token ids ``[n, L]`` → logits.

Both build their attention mask from the ids (``ids != pad_token_id``), so a task batch
is nothing but padded token ids (:mod:`metasuite.data.text.sampler`).

- ``"text_conv"``: embedding, 1-D convolutions, max over the real tokens, a linear
  classifier. Needs no Hugging Face model; seconds per meta-iteration on a CPU.
- ``"hf"``: a Hugging Face encoder with a sequence-classification head, from a local
  model folder (``backbone_kwargs: {"model": "<folder>"}``, loaded with
  ``local_files_only=True``) or from a small config with random weights
  (``{"config": {"hidden_size": 32, ...}}``, BERT unless ``model_type`` says otherwise).
  Attention runs the "eager" implementation, which has a double backward (second-order
  MAML); the module says so in the manifest (``manifest_record``). ``transformers`` is
  imported here only, when an "hf" backbone is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metasuite.config import dataset_root
from metasuite.data.text.tokenizer import model_folder
from metasuite.errors import ConfigError

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
ATTENTION = "eager"
"""The attention implementation: plain matmul/softmax ops, all twice differentiable."""
TINY_BERT: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
}
"""The random-weights encoder when backbone_kwargs gives no "config" (a CPU-sized BERT)."""


class TextConv(nn.Module):
    """Embedding → parallel 1-D convolutions → max over the non-pad positions → linear."""

    def __init__(
        self,
        vocab_size: int,
        pad_token_id: int,
        num_classes: int,
        *,
        embedding_dim: int,
        filters: int,
        kernel_sizes: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.pad_token_id = pad_token_id
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_token_id)
        self.convs = nn.ModuleList(
            nn.Conv1d(embedding_dim, filters, k, padding=k // 2) for k in kernel_sizes
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(filters * len(kernel_sizes), num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_token_id).unsqueeze(1)  # [n, 1, L]
        x = self.embedding(ids).transpose(1, 2)  # [n, E, L]
        length = ids.shape[1]
        # ReLU outputs are >= 0, so zeroing the pad positions leaves the max over the
        # real tokens unchanged (every example has at least one real token).
        pooled = [
            torch.relu(conv(x))[..., :length].masked_fill(~mask, 0.0).amax(dim=2)
            for conv in self.convs
        ]
        return self.classifier(self.dropout(torch.cat(pooled, dim=1)))


def text_conv(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    vocab_size: int,
    pad_token_id: int,
    embedding_dim: int = 64,
    filters: int = 64,
    kernel_sizes: Sequence[int] = (3, 5),
    dropout: float = 0.0,
) -> nn.Module:
    """The built-in CPU text encoder (``input_shape`` is ``(max_length,)``)."""
    del input_shape  # convolutions and max pooling take any length
    if embedding_dim < 1 or filters < 1 or not kernel_sizes or min(kernel_sizes) < 1:
        raise ConfigError(
            "backbone_kwargs: text_conv needs embedding_dim >= 1, filters >= 1 and a non-empty "
            f"list of kernel_sizes >= 1; got {embedding_dim}, {filters}, {list(kernel_sizes)}"
        )
    return TextConv(
        vocab_size,
        pad_token_id,
        num_classes,
        embedding_dim=embedding_dim,
        filters=filters,
        kernel_sizes=tuple(kernel_sizes),
        dropout=dropout,
    )


class HFClassifier(nn.Module):
    """A ``transformers`` sequence classifier called with ids and the mask it implies."""

    def __init__(self, model: nn.Module, pad_token_id: int, record: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id
        self.manifest_record = record

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != self.pad_token_id).long()
        return self.model(input_ids=ids, attention_mask=mask).logits


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            'backbone "hf" needs the Python package transformers: run ./install.sh (or '
            'pip install -e ".[text]")'
        ) from None
    transformers.logging.set_verbosity_error()
    return transformers


def hf_encoder(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    vocab_size: int,
    pad_token_id: int,
    model: str | None = None,
    config: dict[str, Any] | None = None,
) -> nn.Module:
    """A Hugging Face encoder with a fresh ``num_classes``-way classification head."""
    tf = _transformers()
    if model is not None and config is not None:
        raise ConfigError('backbone_kwargs: give "model" (a local folder) or "config", not both')
    if model is not None:
        folder = model_folder(model, "backbone_kwargs.model", dataset_root())
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            raise ConfigError(
                f"backbone_kwargs.model {str(folder)!r}: the folder holds no weights (none of "
                f"{', '.join(WEIGHT_FILES)}); save them with model.save_pretrained(folder)"
            )
        try:
            net = tf.AutoModelForSequenceClassification.from_pretrained(
                str(folder),
                num_labels=num_classes,
                local_files_only=True,
                attn_implementation=ATTENTION,
                ignore_mismatched_sizes=True,
            )
        except Exception as exc:
            raise ConfigError(
                f"backbone_kwargs.model {str(folder)!r}: cannot load it ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]})"
            ) from None
        source = str(Path(folder).resolve())
    else:
        settings = dict(TINY_BERT if config is None else config)
        model_type = settings.pop("model_type", "bert")
        settings.setdefault("max_position_embeddings", max(512, int(input_shape[0])))
        try:
            hf_config = tf.AutoConfig.for_model(
                model_type,
                vocab_size=vocab_size,
                pad_token_id=pad_token_id,
                num_labels=num_classes,
                **settings,
            )
            hf_config._attn_implementation = ATTENTION
            net = tf.AutoModelForSequenceClassification.from_config(
                hf_config, attn_implementation=ATTENTION
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"backbone_kwargs.config: transformers refused it ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]})"
            ) from None
        source = f"random weights ({model_type} config)"
    embedding = net.get_input_embeddings().num_embeddings
    if embedding < vocab_size:
        raise ConfigError(
            f'backbone "hf": the tokenizer has {vocab_size} tokens but the model\'s embedding '
            f"only {embedding}; use the model folder's own tokenizer (tokenizer: <the folder>)"
        )
    positions = getattr(net.config, "max_position_embeddings", None)
    if positions is not None and positions < int(input_shape[0]):
        raise ConfigError(
            f"max_length is {input_shape[0]} but the model takes at most {positions} positions"
        )
    record = {"source": source, "attention": ATTENTION, "model_type": net.config.model_type}
    return HFClassifier(net, pad_token_id, record)


__all__ = ["ATTENTION", "HFClassifier", "TextConv", "hf_encoder", "text_conv"]
