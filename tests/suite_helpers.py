"""Small suites written into a temp folder, shared by the generator and runner tests."""

from __future__ import annotations

from pathlib import Path

# A tiny Omniglot config: small enough to train for a few iterations on a 2-core CPU.
TINY_TEMPLATE = """\
{
  "experiment_name": {{ experiment_name | tojson }},
  "dataset_name": "omniglot_dataset",
  "dataset_path": {{ dataset_path | tojson }},
  "num_classes_per_set": {{ way | tojson }},
  "num_samples_per_class": {{ shot | tojson }},
  "num_target_samples": 1,
  "batch_size": 2,
  "train_seed": {{ seed | tojson }},
  "val_seed": 0,
  "cnn_num_filters": 8,
  "number_of_training_steps_per_iter": 1,
  "number_of_evaluation_steps_per_iter": 1,
  "per_step_bn_statistics": {{ plus_plus | tojson }},
  "learnable_per_layer_per_step_inner_loop_learning_rate": {{ plus_plus | tojson }},
  "use_multi_step_loss_optimization": {{ plus_plus | tojson }},
  "total_epochs": {{ epochs | tojson }},
  "total_iter_per_epoch": {{ iters | tojson }},
  "total_epochs_before_pause": {{ pause | default(epochs) | tojson }},
  "num_evaluation_tasks": 4,
  "num_dataprovider_workers": 0,
  "checkpoint_every_n_iters": 1,
  "max_models_to_save": 2
}
"""

TINY_SUITE = """\
[suite]
root = ".."
naming = "{{ method }}_{{ way }}way_{{ shot }}shot_s{{ seed }}"
config_template = "tiny.json.j2"

[constants]
dataset_path = "omniglot_dataset"
epochs = 2
iters = 3

[grid]
method = { method = ["maml", "maml++"], plus_plus = [false, true] }
way = [5, 20]
shot = [1]
seed = [0, 1]

[[exclude]]
method = "maml"
way = 20
"""
"""6 experiments: maml 5-way s0/s1, maml++ 5-way and 20-way s0/s1."""

TINY_NAMES = [
    "maml_5way_1shot_s0",
    "maml_5way_1shot_s1",
    "maml++_5way_1shot_s0",
    "maml++_5way_1shot_s1",
    "maml++_20way_1shot_s0",
    "maml++_20way_1shot_s1",
]
"""TINY_SUITE's experiment names in grid order (method slowest, seed fastest)."""


def write_suite(
    root: Path, suite: str = TINY_SUITE, template: str = TINY_TEMPLATE, **extra: str
) -> Path:
    """Write ``root/experiment_template_config/suite.toml`` (+ templates); return its path."""
    folder = root / "experiment_template_config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite.toml").write_text(suite)
    (folder / "tiny.json.j2").write_text(template)
    for name, text in extra.items():
        (folder / name).write_text(text)
    return folder / "suite.toml"
