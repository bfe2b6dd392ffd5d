"""A tiny search (templates, search file) written into a temp folder, for the tune tests."""

from __future__ import annotations

from pathlib import Path

TINY_TEMPLATE = """\
{
  "experiment_name": {{ experiment_name | tojson }},
  "dataset_name": "omniglot_dataset",
  "dataset_path": "omniglot_dataset",
  "num_classes_per_set": 5,
  "num_samples_per_class": 1,
  "num_target_samples": 1,
  "batch_size": 2,
  "train_seed": {{ seed | tojson }},
  "val_seed": 0,
  "cnn_num_filters": 4,
  "number_of_training_steps_per_iter": {{ inner_steps | tojson }},
  "number_of_evaluation_steps_per_iter": {{ inner_steps | tojson }},
  "total_epochs": {{ epochs | tojson }},
  "total_iter_per_epoch": {{ iters | tojson }},
  "total_epochs_before_pause": {{ epochs | tojson }},
  "num_evaluation_tasks": 4,
  "num_dataprovider_workers": 0,
  "checkpoint_every_n_iters": 1,
  "max_models_to_save": 1,
  "backend": "loop"
}
"""

SPACE = """\
[space.init_inner_loop_learning_rate]
type = "float"
low = 0.001
high = 1.0
log = true

[space.inner_steps]
type = "int"
low = 1
high = 2
"""


def search_text(
    *, trials: int = 4, epochs: int = 3, iters: int = 2, space: str = SPACE, extra: str = ""
) -> str:
    return f"""\
[search]
root = "out"
naming = "tiny_t{{{{ trial }}}}"
config_template = "tiny.json.j2"
trials = {trials}

[constants]
seed = 0
epochs = {epochs}
iters = {iters}
inner_steps = 1

{space}
[sampler]
seed = 0

[pruner]
kind = "median"
n_startup_trials = 1
{extra}"""


def write_search(folder: Path, text: str | None = None, **kwargs) -> Path:
    """``folder/search.toml`` beside its template; returns the search file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.json.j2").write_text(TINY_TEMPLATE)
    path = folder / "search.toml"
    path.write_text(text if text is not None else search_text(**kwargs))
    return path
