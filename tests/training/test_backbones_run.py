"""Backbones through ``metasuite train`` on real Omniglot: a small ResNet-12 and a
user's own module (its factory in a file beside the config, on PYTHONPATH) train,
test and, killed with SIGKILL and resumed, end bit for bit where an uninterrupted run
ends, with every meta-learner; the manifest records the network; a bad backbone is one
line and exit 2 with nothing written; another backbone's checkpoint is refused.

Every learner runs on each backbone in-process (a checkpoint round trip mid-run gives
the uninterrupted run's state); the subprocess SIGKILL runs cover each learner once.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from builder_helpers import killed_and_resumed, read_json, train, write_config
from maml_helpers import random_batch, tiny_config
from meta_learner_helpers import LEARNER_SETTINGS, REPTILE
from metasuite.learner.learners import build_learner

USER_MODULE = '''
import torch
from torch import nn


def build(input_shape, num_classes, width=6, dropout=0.2):
    """A user's ten-line network: conv-BN-ReLU-pool twice, dropout, a linear head."""
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes),
    )
'''

LEARNERS: dict[str, dict[str, Any]] = {
    name: LEARNER_SETTINGS[name] for name in ("maml", "meta_sgd", "anil", "reptile", "protonet")
}
LEARNERS["reptile"] = {**REPTILE, "meta_learning_rate": 1.0}
BACKBONES: dict[str, dict[str, Any]] = {
    "resnet12": {
        "backbone": "resnet12",
        "backbone_kwargs": {"widths": [4, 4, 6, 6], "dropblock_rate": 0.1, "dropblock_size": 3},
    },
    "user": {"backbone": "my_net:build"},
}


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``my_net.py`` beside the configs, its folder on PYTHONPATH (here and for the
    ``metasuite train`` processes)."""
    (tmp_path / "my_net.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{__import__('os').environ.get('PYTHONPATH', '')}")
    return tmp_path


def _state_bytes(system) -> bytes:
    buffer = io.BytesIO()
    torch.save(system.state_dict(), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("learner", list(LEARNERS))
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_a_checkpoint_round_trip_mid_run_gives_the_uninterrupted_state(
    backbone: str, learner: str, user_module: Path
) -> None:
    """Three steps straight, against one step, a save and load into a new learner (a
    new process's), two more steps: the same state, bit for bit (dropout and DropBlock
    masks included, being seeded by task)."""
    cfg = tiny_config(image_height=28, image_width=28, **BACKBONES[backbone], **LEARNERS[learner])
    straight = build_learner(cfg)
    for it in range(3):
        straight.train_step(random_batch(cfg, seed=it), 0)
    first = build_learner(cfg)
    first.train_step(random_batch(cfg, seed=0), 0)
    saved = _state_bytes(first)
    torch.rand(10)  # what ran before must not matter
    resumed = build_learner(cfg)
    resumed.load_state_dict(torch.load(io.BytesIO(saved), weights_only=False))
    for it in (1, 2):
        resumed.train_step(random_batch(cfg, seed=it), 0)
    a, b = straight.state_dict(), resumed.state_dict()
    for group in type(straight).STATE_GROUPS:
        for k in a[group]:
            assert torch.equal(a[group][k], b[group][k]), (group, k)
    evaluation = random_batch(cfg, seed=7)
    assert torch.equal(
        straight.evaluate(evaluation).probabilities, resumed.evaluate(evaluation).probabilities
    )


KILLED = [
    ("resnet12", "maml"),
    ("resnet12", "anil"),
    ("user", "meta_sgd"),
    ("user", "reptile"),
    ("user", "protonet"),
    ("resnet12", "baseline_pp"),
]


@pytest.mark.slow
@pytest.mark.parametrize("backbone, learner", KILLED, ids=[f"{b}-{m}" for b, m in KILLED])
def test_sigkill_resumes_exactly_and_the_manifest_records_the_backbone(
    backbone: str, learner: str, tmp_path: Path, user_module: Path, omniglot_folder: Path
) -> None:
    changes = LEARNER_SETTINGS["baseline_pp"] if learner == "baseline_pp" else LEARNERS[learner]
    config = write_config(tmp_path, total_epochs=2, **BACKBONES[backbone], **changes)
    folder = killed_and_resumed(config, tmp_path)
    runs = read_json(folder / "manifest.json")["runs"]
    assert len(runs) == 2
    described = runs[-1]["backbone"]
    assert described["name"] == BACKBONES[backbone]["backbone"]
    assert described["batch_norm_mode"] == "transductive"
    assert runs[-1]["meta_learner"] == changes.get("meta_learner", "maml")
    assert described["parameters"]  # every tensor's name and shape
    assert all(run["backbone"] == described for run in runs)


@pytest.mark.slow
def test_resuming_with_another_backbone_is_refused_in_one_line(
    tmp_path: Path, user_module: Path, omniglot_folder: Path
) -> None:
    root = tmp_path / "experiments"
    paused = train(write_config(tmp_path, total_epochs_before_pause=1), root)
    assert paused.returncode == 3, paused.stderr
    other = write_config(tmp_path, "other", backbone="my_net:build")
    refused = train(other, root)
    assert refused.returncode == 2
    lines = [x for x in refused.stderr.splitlines() if x.startswith("metasuite train: error:")]
    assert len(lines) == 1 and "backbone" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"backbone": "resnet13"}, "did you mean 'resnet12'"),
        ({"backbone": "my_net:missing"}, "has no callable 'missing'"),
        ({"backbone": "my_net:build", "backbone_kwargs": {"depth": 2}}, "backbone_kwargs"),
    ],
)
def test_a_bad_backbone_is_one_line_exit_2_and_nothing_written(
    changes: dict[str, Any], message: str, tmp_path: Path, user_module: Path
) -> None:
    root = tmp_path / "experiments"
    proc = train(write_config(tmp_path, **changes), root)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [x for x in proc.stderr.splitlines() if x.startswith("metasuite train: error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (root / "tiny").exists()
