"""Small text data sets the text tests write (no downloads): each class has its own
words among shared filler words, so a learner can tell classes apart from a few shots;
and a tiny BERT model folder saved from a random-weights config."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import meta_learner_helpers

FILLER = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "it",
    "that",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "at",
    "be",
    "this",
]

TEXT_TINY: dict[str, Any] = {
    "experiment_name": "tiny",
    "dataset_name": "tinytext",
    "dataset_path": "tinytext",
    "modality": "text",
    "backbone": "text_conv",
    "backbone_kwargs": {"embedding_dim": 8, "filters": 8, "kernel_sizes": [3]},
    "vocab_size": 120,
    "max_length": 16,
    "train_val_test_split": [0.5, 0.25, 0.25],
    "num_classes_per_set": 3,
    "num_samples_per_class": 2,
    "num_target_samples": 2,
    "number_of_training_steps_per_iter": 2,
    "number_of_evaluation_steps_per_iter": 2,
    "multi_step_loss_num_epochs": 1,
    "first_order_to_second_order_epoch": 0,
    "per_step_bn_statistics": False,
    "total_iter_per_epoch": 4,
    "total_epochs": 2,
    "num_evaluation_tasks": 6,
    "batch_size": 2,
    "checkpoint_every_n_iters": 2,
    "max_models_to_save": 2,
    "backend": "loop",
}
"""A tiny text experiment: 12 classes split 6/3/3, 3-way 2-shot, a few seconds."""

REPTILE: dict[str, Any] = {**meta_learner_helpers.REPTILE, "meta_learning_rate": 1.0}


def sentences(label: int, count: int, rng: random.Random) -> list[str]:
    own = [f"w{label}x{k}" for k in range(6)]
    return [
        " ".join(
            rng.choice(own if rng.random() < 0.4 else FILLER) for _ in range(rng.randint(4, 10))
        )
        for _ in range(count)
    ]


def write_rows(
    folder: Path,
    *,
    classes: int = 12,
    per_class: int = 8,
    domains: int = 0,
    fmt: str = "jsonl",
    seed: int = 0,
) -> Path:
    """``folder/data.<fmt>`` of ``classes`` x ``per_class`` rows; with ``domains`` each
    row also has a domain, and labels are reused across domains (review-style)."""
    rng = random.Random(seed)
    rows = []
    for c in range(classes):
        for text in sentences(c, per_class, rng):
            row = {"text": text, "label": f"class{c:02d}"}
            if domains:
                row = {"text": text, "label": ["neg", "pos"][c % 2], "domain": f"d{c // 2}"}
            rows.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    else:
        sep = "\t" if fmt == "tsv" else ","
        keys = list(rows[0])
        lines = [sep.join(keys)] + [sep.join(str(r[k]) for k in keys) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_config(folder: Path, name: str = "tiny", **changes: Any) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(TEXT_TINY | changes, indent=2))
    return path


TINY_BERT: dict = {
    "backbone": "hf",
    "backbone_kwargs": {
        "config": {
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
        }
    },
}
"""A one-layer BERT built from a config (random weights, dropout on): the "hf" backbone
in milliseconds, with no model folder."""
