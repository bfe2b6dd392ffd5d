"""One typed, validated experiment configuration, read once at the edge.

Every key of the reference MAML++ JSON configs is a field of :class:`ExperimentConfig`,
so their files load unchanged; the few keys that only the reference code used are
accepted with a warning and dropped. Everything after ``load_config`` works with the
frozen dataclass, never with a dict, so a typo is caught here, with the file and key
named, instead of silently changing an experiment three modules later.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from metasuite import jsontext
from metasuite.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this package was installed from (editable install)."""

# Keys only the reference code read. They are accepted so that its configs keep working.
LEGACY_IGNORED_KEYS: dict[str, str] = {
    "gpu_to_use": "devices come from the command line (X.sh 0 1 / --gpus)",
    "use_gdrive": "Google Drive sync is not supported",
    "total_unique_tasks": "tasks are a pure function of (seed, index); there is no task pool",
    "task_learning_rate": "use init_inner_loop_learning_rate",
    "num_of_gpus": "devices come from the command line (X.sh 0 1 / --gpus)",
    "samples_per_iter": "always 1 in the reference code",
    "labels_as_int": "labels are always integers",
    "reverse_channels": "images are always RGB or grayscale as stored",
    "augment_images": "Omniglot is always augmented by rotation, other data sets never",
    "seed": "use train_seed / val_seed",
    "optimize_final_target_loss_only": "use_multi_step_loss_optimization decides (MSL on/off)",
}
# Keys whose spelling changed: old name -> new name.
RENAMED_KEYS: dict[str, str] = {"evalute_on_test_set_only": "evaluate_on_test_set_only"}
# Values whose name changed, per key: old value -> new value (accepted with a warning).
RENAMED_VALUES: dict[str, dict[str, str]] = {"backend": {"threads": "grouped"}}
# Keys that are silently ignored: they are set by the tooling, not by users.
SILENT_IGNORED_KEYS: frozenset[str] = frozenset({"gpu_to_use"})

ContinueFrom = int | Literal["from_scratch", "latest"]


class FrozenJson(dict):  # type: ignore[type-arg]
    """A JSON object that cannot change and can be hashed, so that a frozen config can
    hold one (``backbone_kwargs``). Nested objects are FrozenJson, arrays tuples."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True))

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle (configs travel to spawned ranks) rebuilds it whole, not key by key
        return (FrozenJson, (dict(self),))

    def _immutable(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("config values cannot change; use metasuite.config.replace")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _immutable  # type: ignore[assignment]


def _freeze_json(value: Any) -> Any:
    """``value`` as immutable JSON (FrozenJson objects, tuple arrays), or _Mismatch."""
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise _Mismatch
        return FrozenJson({k: _freeze_json(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze_json(v) for v in value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise _Mismatch


def thaw_json(value: Any) -> Any:
    """Plain JSON types again (dicts and lists): for writing, for replace(), and for
    checkpoints (``torch.load(weights_only=True)`` reads plain containers only)."""
    if isinstance(value, Mapping):
        return {k: thaw_json(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw_json(v) for v in value]
    return value


@dataclass(frozen=True)
class ExperimentConfig:
    """An experiment of the MAML++ family.

    Field names and meanings follow the reference configs; defaults are those of its
    Omniglot MAML++ 5-way 1-shot config. Fields after ``use_multi_step_loss_optimization``
    are metasuite's own and have defaults, so reference configs need not name them.
    """

    # --- data --------------------------------------------------------------------
    batch_size: int = 8
    image_height: int = 28
    image_width: int = 28
    image_channels: int = 1
    num_dataprovider_workers: int = 4
    max_models_to_save: int = 5
    dataset_name: str = "omniglot_dataset"
    dataset_path: str = "omniglot_dataset"
    reset_stored_paths: bool = False
    experiment_name: str = "omniglot_maml++_5_way_1_shot"
    train_seed: int = 0
    val_seed: int = 0
    train_val_test_split: tuple[float, ...] = (0.70918052988, 0.03080714725, 0.2606284658)
    indexes_of_folders_indicating_class: tuple[int, ...] = (-3, -2)
    load_from_npz_files: bool = False
    sets_are_pre_split: bool = False
    load_into_memory: bool = True
    # --- learner -----------------------------------------------------------------
    init_inner_loop_learning_rate: float = 0.1
    train_in_stages: bool = False
    multi_step_loss_num_epochs: int = 10
    minimum_per_task_contribution: float = 0.01
    num_evaluation_tasks: int = 600
    learnable_per_layer_per_step_inner_loop_learning_rate: bool = True
    enable_inner_loop_optimizable_bn_params: bool = False
    total_epochs: int = 100
    total_iter_per_epoch: int = 500
    continue_from_epoch: ContinueFrom = -2
    evaluate_on_test_set_only: bool = False
    max_pooling: bool = True
    per_step_bn_statistics: bool = True
    learnable_batch_norm_momentum: bool = False
    learnable_bn_gamma: bool = True
    learnable_bn_beta: bool = True
    weight_decay: float = 0.0
    dropout_rate_value: float = 0.0
    min_learning_rate: float = 0.00001
    meta_learning_rate: float = 0.001
    total_epochs_before_pause: int = 100
    first_order_to_second_order_epoch: int = -1
    norm_layer: Literal["batch_norm", "layer_norm"] = "batch_norm"
    cnn_num_filters: int = 64
    num_stages: int = 4
    conv_padding: bool = True
    number_of_training_steps_per_iter: int = 5
    number_of_evaluation_steps_per_iter: int = 5
    cnn_blocks_per_stage: int = 1
    num_classes_per_set: int = 5
    num_samples_per_class: int = 1
    num_target_samples: int = 1
    second_order: bool = True
    use_multi_step_loss_optimization: bool = True
    # --- metasuite's own ---------------------------------------------------------
    test_seed: int | None = None
    """Seed of the fixed test task set; None means val_seed, as in the reference code."""
    backend: Literal["auto", "loop", "vmap", "grouped"] = "auto"
    """Inner-loop implementation; 'auto' picks one per device type (grouped on the CPU,
    the fastest measured; vmap on CUDA, not measured). 'threads' is grouped's old name."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16 autocasts the network's forward; fp32 is the reference."""
    checkpoint_every_n_iters: int = 100
    """Extra checkpoints inside an epoch, so a kill loses at most this many iterations
    (0: only at the end of each epoch)."""
    max_images_per_class: int | None = None
    """Class-array data sets (one .npy/.npz per class): read only the first this many
    images of each class (None: all), so a 100k-image class does not fill memory."""
    meta_learner: Literal[
        "maml", "meta_sgd", "anil", "reptile", "protonet", "baseline", "baseline_pp"
    ] = "maml"
    """The meta-learning algorithm. "maml": MAML, FOMAML or MAML++ as the reference keys
    say; "meta_sgd": a learned inner rate per parameter element (Li et al. 2017);
    "anil": the inner loop adapts only the classifier (Raghu et al. 2020); "reptile":
    theta moves toward the adapted weights (Nichol et al. 2018); "protonet": class
    prototypes and squared Euclidean distances (Snell et al. 2017); "baseline" and
    "baseline_pp": a classifier pre-trained on all training classes, then a new linear
    (Baseline) or cosine (Baseline++) head fitted on each task's support set (Chen et
    al. 2019)."""
    backbone: str = "conv"
    """The network meta-learned: "conv" (the reference network, shaped by cnn_num_filters,
    num_stages, norm_layer, max_pooling, conv_padding), "resnet12" (the few-shot
    ResNet-12), or "package.module:callable", a user's factory called as
    ``factory(input_shape, num_classes, **backbone_kwargs)`` returning an ``nn.Module``
    that maps a batch to logits (metasuite.learner.backbones)."""
    backbone_kwargs: dict[str, Any] = FrozenJson()  # noqa: RUF009 (immutable, hashable)
    """Keyword arguments of the backbone's factory (e.g. resnet12's ``widths``)."""
    inner_loop_parameters: tuple[str, ...] | None = None
    """Shell patterns of the parameter names the inner loop adapts (None: every parameter
    but the norm layers', which enable_inner_loop_optimizable_bn_params adds, as the
    reference does). ANIL ignores it: it adapts the head."""
    head: str | None = None
    """The module name of the classifier ANIL adapts (None: the last nn.Linear whose
    out_features is the number of ways)."""
    batch_norm_mode: Literal["transductive", "running"] = "transductive"
    """"transductive": batch norm always normalises with the batch's own statistics, in
    training and evaluation (the reference, MAML). "running": evaluation normalises with
    the per-step running statistics (needs per_step_bn_statistics; not for "conv")."""
    activation_checkpointing: bool = False
    """Recompute each inner-loop forward during the backward pass instead of keeping its
    activations (torch.utils.checkpoint, non-reentrant): less memory for second order
    through a large network, at about one extra forward per step. Not for "conv"."""
    tensorboard: bool = True
    """Write TensorBoard event files (``<experiment>/tensorboard/``) beside the metrics log
    when the ``tensorboard`` package is installed; false: never. Changes no number."""
    finetune_steps: int = 100
    """Baseline/Baseline++: full-batch gradient steps (SGD, momentum 0.9) fitting the new
    head on each evaluation task's support set."""
    finetune_learning_rate: float = 0.01
    """Baseline/Baseline++: the learning rate of those steps."""
    finetune_body: bool = False
    """Baseline/Baseline++: fine-tune the body with the head (default: body frozen)."""
    cosine_scale: float = 10.0
    """Baseline++: the scale of its cosine-similarity logits (pre-training and fitted
    head); Chen et al. use 10 for more than 200 classes."""
    modality: Literal["image", "text"] = "image"
    """What a task's examples are: images (every layout of metasuite.data.layouts) or
    text (rows of labelled sentences, metasuite.data.text); text tasks hold token ids."""
    text_column: str = "text"
    """Text data: the column (CSV/TSV header, JSON key) holding each example's text."""
    label_column: str = "label"
    """Text data: the column holding each example's label."""
    domain_column: str = "domain"
    """Text data: the column holding each example's domain (needed by task_unit
    "domain"; optional otherwise)."""
    task_unit: Literal["class", "domain"] = "class"
    """Text data: "class": N-way K-shot over disjoint classes (split by ratio or by
    pre-split files, as for images); "domain": each task is one domain with its own label
    set, domains split by name (val_domains/test_domains) or by ratio."""
    val_domains: tuple[str, ...] | None = None
    """task_unit "domain": the validation domains by name (None: split by ratio)."""
    test_domains: tuple[str, ...] | None = None
    """task_unit "domain": the test domains by name (None: split by ratio)."""
    tokenizer: str = "wordpiece"
    """Text data: "wordpiece" (trained on the training split only, vocab_size tokens,
    kept in the experiment folder) or a local folder holding a Hugging Face tokenizer
    (e.g. the model folder of an "hf" backbone)."""
    vocab_size: int = 4000
    """Text data: the vocabulary size of a trained "wordpiece" tokenizer."""
    max_length: int = 64
    """Text data: tokens per example at most (longer ones are truncated); a batch is
    padded to its longest example."""
    inner_optimizer: Literal["sgd", "adam"] = "sgd"
    """Reptile's inner optimiser: "sgd" (the inner step every learner takes) or "adam"
    (Nichol et al.'s choice and the review-domain system's: betas (0, 0.999), eps 1e-8,
    at init_inner_loop_learning_rate, fresh state per task, in training and evaluation)."""

    # ------------------------------------------------------------------ derived
    @property
    def effective_test_seed(self) -> int:
        return self.val_seed if self.test_seed is None else self.test_seed

    @property
    def is_omniglot(self) -> bool:
        """The reference code rotates Omniglot classes; it detects them by name."""
        return "omniglot" in self.dataset_name.lower()

    def use_second_order(self, epoch: int) -> bool:
        """DA: first order until first_order_to_second_order_epoch, then second order."""
        return self.second_order and epoch > self.first_order_to_second_order_epoch


CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ExperimentConfig))
_HINTS = get_type_hints(ExperimentConfig)
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(ExperimentConfig)}


def _expected(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in get_args(tp))
    if origin is tuple:
        item = get_args(tp)[0]
        plural = {int: "integers", float: "numbers", str: "strings"}.get(item, str(item))
        return f"a list of {plural}"
    if tp is type(None):
        return "null"
    if origin is dict:
        return "a JSON object"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Check ``value`` against type ``tp``; return it in canonical form or raise."""
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for option in get_args(tp):
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch
        return tuple(_coerce(v, get_args(tp)[0]) for v in value)
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return _freeze_json(value)
    if tp is bool:
        # The reference configs write some switches as 0/1 (e.g. "conv_padding": 1).
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):
            return bool(value)
        raise _Mismatch
    if tp is int:
        if type(value) is int:
            return value
        raise _Mismatch
    if tp is float:
        if type(value) in (int, float) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported config field type {tp!r}")


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, CONFIG_FIELDS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def from_dict(raw: Mapping[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a mapping of config keys and build the config.

    Raises :class:`ConfigError` naming ``source``, the key and what was expected.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{source}: expected a JSON object of config keys, got {type(raw).__name__}"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in RENAMED_KEYS:
            new = RENAMED_KEYS[key]
            if new in raw and raw[new] != value:
                raise ConfigError(
                    f"{source}: {key!r} (deprecated spelling of {new!r}) is {value!r} but "
                    f"{new!r} is {raw[new]!r}; remove {key!r}"
                )
            warnings.warn(
                f"{source}: {key!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=2
            )
            if new in raw:
                continue
            key = new
        elif key in LEGACY_IGNORED_KEYS:
            if key not in SILENT_IGNORED_KEYS:
                warnings.warn(
                    f"{source}: legacy key {key!r} ignored: {LEGACY_IGNORED_KEYS[key]}",
                    UserWarning,
                    stacklevel=2,
                )
            continue
        elif key not in CONFIG_FIELDS:
            raise ConfigError(f"{source}: unknown key {key!r}{_suggest(key)}")
        renamed = RENAMED_VALUES.get(key, {})
        if isinstance(value, str) and value in renamed:
            warnings.warn(
                f"{source}: {key} {value!r} is deprecated, use {renamed[value]!r}",
                DeprecationWarning,
                stacklevel=2,
            )
            value = renamed[value]
        try:
            values[key] = _coerce(value, _HINTS[key])
        except _Mismatch:
            raise ConfigError(
                f"{source}: {key} must be {_expected(_HINTS[key])}, got {json.dumps(value)}"
            ) from None
    config = ExperimentConfig(**values)
    _check_ranges(config, source)
    return config


EXPERIMENT_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
MAX_EXPERIMENT_NAME_LENGTH = 128
"""Names become file names with suffixes (``<name>.json``, ``<name>.sh``, Slurm's
``<name>.sbatch`` and log names), and most file systems stop at 255 bytes."""
EXPERIMENT_NAME_RULE = (
    f"at most {MAX_EXPERIMENT_NAME_LENGTH} letters, digits and . _ + = - starting with a "
    "letter or digit (names become file and folder names and one line of the status table)"
)
"""The one rule for experiment names, used by configs (``train``) and the generator."""


def is_experiment_name(name: str) -> bool:
    return (
        len(name) <= MAX_EXPERIMENT_NAME_LENGTH
        and EXPERIMENT_NAME_PATTERN.fullmatch(name) is not None
    )


AT_MOST: dict[str, int] = {
    "batch_size": 4096, "image_height": 4096, "image_width": 4096,
    "num_dataprovider_workers": 1024, "max_models_to_save": 1000,
    "num_evaluation_tasks": 1_000_000, "total_epochs": 1_000_000,
    "total_iter_per_epoch": 10_000_000, "total_epochs_before_pause": 1_000_000,
    "multi_step_loss_num_epochs": 1_000_000, "first_order_to_second_order_epoch": 1_000_000,
    "continue_from_epoch": 1_000_000, "checkpoint_every_n_iters": 10_000_000,
    "cnn_num_filters": 8192, "num_stages": 64, "cnn_blocks_per_stage": 64,
    "number_of_training_steps_per_iter": 1000, "number_of_evaluation_steps_per_iter": 1000,
    "num_classes_per_set": 10_000, "num_samples_per_class": 10_000,
    "num_target_samples": 10_000, "max_images_per_class": 100_000_000,
    "finetune_steps": 1_000_000, "vocab_size": 10_000_000, "max_length": 100_000,
}  # fmt: skip
"""Upper bounds on every count, far above any published few-shot setting (the paper's
largest: 600 evaluation tasks, 150 epochs, 64 filters, 20-way), so that a typo such as
1e30 epochs or 1e12 evaluation tasks is one line at load time, not a run that never ends
or an allocation traceback. Products of counts are held by :func:`_check_size`."""

MAX_PARAMETERS = 1_000_000_000
"""The most network parameters a config may ask for: 4 GB of float32 weights, before
the gradients, Adam's two moments and the inner loop's copies multiply them."""

MAX_META_BATCH_PIXELS = 2**34
"""The most image values (pixels x channels) one meta-batch may hold: 64 GiB as float32
before a single activation, well past any machine this runs on."""


def _check_size(c: ExperimentConfig, source: str) -> None:
    """Refuse, up front and on one line, a config whose network or meta-batch cannot
    fit any machine: counts that each pass :data:`AT_MOST` can still multiply to that."""
    f, blocks, ways = (
        c.cnn_num_filters,
        c.num_stages * c.cnn_blocks_per_stage,
        c.num_classes_per_set,
    )
    conv = 9 * c.image_channels * f + 9 * f * f * (blocks - 1)
    if c.backbone != "conv":  # another network's size is its factory's (checked there)
        conv = f = 0
    if c.max_pooling:  # the head sees the map left after one 2x2 pooling per stage
        head = f * max(c.image_height >> c.num_stages, 1) * max(c.image_width >> c.num_stages, 1)
    else:  # strided convolutions, then a global average pool
        head = f
    head *= ways
    parameters = conv + head + 2 * f * blocks
    if parameters > MAX_PARAMETERS:
        raise ConfigError(
            f"{source}: cnn_num_filters {f:,}, num_stages x cnn_blocks_per_stage {blocks}, "
            f"{c.image_height}x{c.image_width} images and {ways} ways make a network of about "
            f"{parameters:,} parameters; at most {MAX_PARAMETERS:,} fit in memory"
        )
    images = c.batch_size * ways * (c.num_samples_per_class + c.num_target_samples)
    pixels = images * c.image_height * c.image_width * c.image_channels
    if pixels > MAX_META_BATCH_PIXELS:
        raise ConfigError(
            f"{source}: batch_size {c.batch_size} x {ways} ways x "
            f"({c.num_samples_per_class} + {c.num_target_samples}) images of "
            f"{c.image_height}x{c.image_width}x{c.image_channels} make {pixels:,} values per "
            f"meta-batch; at most {MAX_META_BATCH_PIXELS:,} fit in memory"
        )


def _check_ranges(c: ExperimentConfig, source: str) -> None:
    def fail(key: str, expected: str) -> None:
        raise ConfigError(f"{source}: {key} must be {expected}, got {json.dumps(getattr(c, key))}")

    at_least = {
        "batch_size": 1, "image_height": 1, "image_width": 1, "num_dataprovider_workers": 0,
        "max_models_to_save": 1, "num_evaluation_tasks": 1, "total_epochs": 1,
        "total_iter_per_epoch": 1, "total_epochs_before_pause": 1, "cnn_num_filters": 1,
        "num_stages": 1, "number_of_training_steps_per_iter": 1,
        "number_of_evaluation_steps_per_iter": 1, "cnn_blocks_per_stage": 1,
        "num_classes_per_set": 2, "num_samples_per_class": 1, "num_target_samples": 1,
        "multi_step_loss_num_epochs": 0, "checkpoint_every_n_iters": 0, "finetune_steps": 1,
    }  # fmt: skip
    for key, low in at_least.items():
        if getattr(c, key) < low:
            fail(key, f"an integer >= {low}")
    for key, high in AT_MOST.items():
        value = getattr(c, key)
        if isinstance(value, int) and not isinstance(value, bool) and value > high:
            fail(key, f"an integer <= {high:,}")
    if c.max_images_per_class is not None and c.max_images_per_class < 1:
        fail("max_images_per_class", "an integer >= 1 or null (every image)")
    for key in ("train_seed", "val_seed", "test_seed"):
        seed = getattr(c, key)
        if seed is not None and not 0 <= seed < 2**63:  # numpy and torch seed ranges
            fail(key, "an integer in [0, 2**63)")
    for key in ("init_inner_loop_learning_rate", "weight_decay", "min_learning_rate"):
        if getattr(c, key) < 0:
            fail(key, "a number >= 0")
    for key in ("meta_learning_rate", "finetune_learning_rate", "cosine_scale"):
        if getattr(c, key) <= 0:
            fail(key, "a number > 0")
    if c.min_learning_rate > c.meta_learning_rate:
        fail("min_learning_rate", f"<= meta_learning_rate ({c.meta_learning_rate})")
    if not 0 <= c.dropout_rate_value < 1:
        fail("dropout_rate_value", "a number in [0, 1)")
    if not 0 <= c.minimum_per_task_contribution <= 1:
        fail("minimum_per_task_contribution", "a number in [0, 1]")
    if c.image_channels not in (1, 3):
        fail("image_channels", "1 (grayscale) or 3 (RGB)")
    split = c.train_val_test_split
    # The reference Omniglot split sums to 1.0006, so allow a little slack.
    if len(split) != 3 or any(p < 0 for p in split) or abs(sum(split) - 1) > 1e-2:
        fail("train_val_test_split", "three non-negative fractions (train, val, test) summing to 1")
    idx = c.indexes_of_folders_indicating_class
    if not idx or any(not -64 <= i < 0 for i in idx) or len(set(idx)) != len(idx):
        fail(
            "indexes_of_folders_indicating_class",
            "a non-empty list of distinct negative folder indexes >= -64 (e.g. [-3, -2])",
        )
    if isinstance(c.continue_from_epoch, int) and c.continue_from_epoch < -2:
        fail("continue_from_epoch", '"from_scratch", "latest", -2, -1 or an epoch number >= 0')
    if (
        c.backbone == "conv"
        and c.max_pooling
        and min(c.image_height, c.image_width) < 2**c.num_stages
    ):
        fail(
            "num_stages",
            f"small enough that {c.num_stages} 2x2 poolings fit a "
            f"{c.image_height}x{c.image_width} image",
        )
    if not is_experiment_name(c.experiment_name):
        fail("experiment_name", EXPERIMENT_NAME_RULE)
    _check_size(c, source)
    # Contradictions: settings that cannot all hold at once.
    if c.per_step_bn_statistics and c.norm_layer != "batch_norm":
        raise ConfigError(
            f"{source}: per_step_bn_statistics is true but norm_layer is {c.norm_layer!r}; "
            'per-step running statistics need norm_layer "batch_norm"'
        )
    if c.evaluate_on_test_set_only and c.continue_from_epoch == "from_scratch":
        raise ConfigError(
            f"{source}: evaluate_on_test_set_only is true but continue_from_epoch is "
            '"from_scratch": there would be no trained model to test'
        )
    if c.enable_inner_loop_optimizable_bn_params and not (
        c.learnable_bn_gamma or c.learnable_bn_beta
    ):
        raise ConfigError(
            f"{source}: enable_inner_loop_optimizable_bn_params is true but learnable_bn_gamma "
            "and learnable_bn_beta are both false: there are no BN parameters to adapt"
        )
    if not c.backbone.strip():
        fail("backbone", '"conv", "resnet12" or "package.module:callable"')
    if c.batch_norm_mode == "running" and not c.per_step_bn_statistics:
        raise ConfigError(
            f'{source}: batch_norm_mode is "running" but per_step_bn_statistics is false: '
            "there are no running statistics to normalise with; set it to true"
        )
    if c.inner_loop_parameters is not None and not c.inner_loop_parameters:
        fail("inner_loop_parameters", "a non-empty list of name patterns, or null (the default)")
    _check_text(c, source)
    _check_meta_learner(c, source)


NO_INNER_LOOP_LEARNERS: frozenset[str] = frozenset({"protonet", "baseline", "baseline_pp"})
"""Learners without an inner loop: every inner-loop key is meaningless to them."""
INNER_LOOP_SWITCHES: dict[str, str] = {
    "second_order": "there is no inner loop to differentiate through",
    "use_multi_step_loss_optimization": "there are no inner steps whose losses to weight",
    "learnable_per_layer_per_step_inner_loop_learning_rate": "there are no inner "
    "learning rates to learn",
    "per_step_bn_statistics": "there are no inner steps to keep batch-norm rows for",
    "enable_inner_loop_optimizable_bn_params": "there is no inner loop to adapt them",
}
INNER_LOOP_SETTINGS: tuple[str, ...] = (
    "init_inner_loop_learning_rate", "number_of_training_steps_per_iter",
    "number_of_evaluation_steps_per_iter", "first_order_to_second_order_epoch",
    "multi_step_loss_num_epochs", "minimum_per_task_contribution",
)  # fmt: skip
"""Inner-loop numbers: refused for those learners when set away from their defaults."""
FINETUNE_KEYS: dict[str, tuple[str, ...]] = {
    "finetune_steps": ("baseline", "baseline_pp"),
    "finetune_learning_rate": ("baseline", "baseline_pp"),
    "finetune_body": ("baseline", "baseline_pp"),
    "cosine_scale": ("baseline_pp",),
}
"""The fine-tuning baselines' own keys and the learners that use them; set away from
its default for any other learner, a key is refused."""


def _check_text(c: ExperimentConfig, source: str) -> None:
    """The text keys: sizes in range, and a domain named in one split only."""
    if c.vocab_size < 100:
        raise ConfigError(f"{source}: vocab_size must be an integer >= 100, got {c.vocab_size}")
    if c.max_length < 2:
        raise ConfigError(f"{source}: max_length must be an integer >= 2, got {c.max_length}")
    for key in ("text_column", "label_column", "domain_column", "tokenizer"):
        if not getattr(c, key).strip():
            raise ConfigError(f'{source}: {key} must be a non-empty string, got ""')
    both = set(c.val_domains or ()) & set(c.test_domains or ())
    if both:
        raise ConfigError(
            f"{source}: val_domains and test_domains both name {sorted(both)}; a domain "
            "belongs to one split"
        )
    if c.modality == "image" and c.task_unit == "domain":
        raise ConfigError(
            f'{source}: task_unit "domain" needs modality "text" (image tasks are over classes)'
        )


def _check_meta_learner(c: ExperimentConfig, source: str) -> None:
    """Switches that mean nothing to the chosen meta-learner: refused, never ignored."""
    if c.meta_learner == "reptile":
        meaningless = {
            "second_order": "Reptile has no meta-gradient through the inner loop, so no "
            "second-order term",
            "learnable_per_layer_per_step_inner_loop_learning_rate": "Reptile's update "
            "has no gradient for the inner learning rates, so they cannot be learned",
            "use_multi_step_loss_optimization": "Reptile never backpropagates a query "
            "loss, so there are no per-step query losses to weight",
        }
        for key, why in meaningless.items():
            if getattr(c, key):
                raise ConfigError(
                    f'{source}: {key} is true but meta_learner is "reptile": {why}; set '
                    f"{key} to false"
                )
    if c.inner_optimizer != "sgd" and c.meta_learner != "reptile":
        raise ConfigError(
            f"{source}: inner_optimizer is {c.inner_optimizer!r} but meta_learner is "
            f'{c.meta_learner!r}; only "reptile" takes another inner optimiser (the MAML '
            "family differentiates through plain SGD steps)"
        )
    if c.meta_learner == "anil" and c.enable_inner_loop_optimizable_bn_params:
        raise ConfigError(
            f"{source}: enable_inner_loop_optimizable_bn_params is true but meta_learner is "
            '"anil", whose inner loop adapts only the classifier; set it to false'
        )
    learner = c.meta_learner
    if learner in NO_INNER_LOOP_LEARNERS:
        for key, why in INNER_LOOP_SWITCHES.items():
            if getattr(c, key):
                raise ConfigError(
                    f'{source}: {key} is true but meta_learner is "{learner}", which has no '
                    f"inner loop: {why}; set {key} to false"
                )
        if c.backend not in ("auto", "loop"):
            raise ConfigError(
                f'{source}: backend is "{c.backend}" but meta_learner is "{learner}", which '
                'has no inner loop to batch; set backend to "auto" (or "loop")'
            )
        for key in INNER_LOOP_SETTINGS:
            if getattr(c, key) != _DEFAULTS[key]:
                raise ConfigError(
                    f"{source}: {key} is {json.dumps(getattr(c, key))} but meta_learner is "
                    f'"{learner}", which has no inner loop; remove {key} (or set it to its '
                    f"default, {json.dumps(_DEFAULTS[key])})"
                )
    for key, users in FINETUNE_KEYS.items():
        if learner not in users and getattr(c, key) != _DEFAULTS[key]:
            named = " or ".join(f'"{name}"' for name in users)
            raise ConfigError(
                f"{source}: {key} is {json.dumps(getattr(c, key))} but meta_learner is "
                f'"{learner}"; only {named} use it; remove {key}'
            )


def load_config(path: str | os.PathLike[str]) -> ExperimentConfig:
    """Read and validate a JSON config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); is this a JSON config file?"
        ) from None
    try:
        raw = jsontext.loads(text)
    except jsontext.JsonTextError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return from_dict(raw, source=str(path))


# Keys added after configs were first generated and hashed: written (and hashed) only
# when set, so existing generated configs and config hashes do not change.
OMITTED_AT_DEFAULT: frozenset[str] = frozenset({
    "max_images_per_class", "meta_learner", "backbone", "backbone_kwargs",
    "inner_loop_parameters", "head", "batch_norm_mode", "activation_checkpointing",
    "tensorboard", "finetune_steps", "finetune_learning_rate", "finetune_body",
    "cosine_scale",
    "modality", "text_column", "label_column", "domain_column", "task_unit", "val_domains",
    "test_domains", "tokenizer", "vocab_size", "max_length", "inner_optimizer",
})  # fmt: skip


def to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The config as plain JSON types, every key present, in field order."""
    out: dict[str, Any] = {}
    for name in CONFIG_FIELDS:
        out[name] = thaw_json(getattr(config, name))
    return out


def _written(config: ExperimentConfig) -> dict[str, Any]:
    """:func:`to_dict` less the :data:`OMITTED_AT_DEFAULT` keys left at their default."""
    out = to_dict(config)
    for name in OMITTED_AT_DEFAULT:
        if out[name] == _DEFAULTS[name]:
            del out[name]
    return out


def to_json(config: ExperimentConfig) -> str:
    """Readable JSON in field order (what ``generate`` writes and humans diff)."""
    return json.dumps(_written(config), indent=2) + "\n"


def canonical_json(config: ExperimentConfig) -> str:
    """Sorted-keys, compact JSON: the form that is hashed."""
    return json.dumps(_written(config), sort_keys=True, separators=(",", ":"))


def config_hash(config: ExperimentConfig) -> str:
    """sha256 of :func:`canonical_json`; same settings, same hash, whatever the key order."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def save_config(config: ExperimentConfig, path: str | os.PathLike[str]) -> None:
    """Write the config atomically (temporary file, then rename)."""
    from metasuite.fsutil import write_text_atomic

    write_text_atomic(Path(path), to_json(config))


def replace(
    config: ExperimentConfig, source: str = "<override>", **changes: Any
) -> ExperimentConfig:
    """A validated copy with some fields changed (tests, CLI overrides)."""
    merged = to_dict(config) | changes
    return from_dict(merged, source=source)


# Fields that change what is trained (or how it is evaluated). A resumed run whose
# config differs in one of these would not be the experiment it claims to be.
NON_TRAINING_FIELDS: frozenset[str] = frozenset({
    "num_dataprovider_workers", "continue_from_epoch", "evaluate_on_test_set_only",
    "total_epochs_before_pause", "reset_stored_paths", "load_into_memory",
    "load_from_npz_files", "experiment_name", "dataset_path", "backend",
    "checkpoint_every_n_iters", "max_models_to_save", "tensorboard",
})  # fmt: skip


def training_differences(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """Human-readable 'key: old -> new' lines for training-relevant fields that differ."""
    diffs = []
    for name in CONFIG_FIELDS:
        if name in NON_TRAINING_FIELDS:
            continue
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            diffs.append(f"{name}: {json.dumps(a)} -> {json.dumps(b)}")
    return diffs


def dataset_root() -> Path:
    """Where data sets live: ``$DATASET_DIR``, else ``<repo>/datasets``."""
    env = os.environ.get("DATASET_DIR")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "datasets"


def resolve_dataset_path(config: ExperimentConfig, root: Path | None = None) -> Path:
    """The data set's folder: ``dataset_path`` under the data set root.

    An absolute path is used as it is, and a relative path that already starts with
    the root (the reference code's habit of writing ``datasets/omniglot``) is not
    prefixed a second time.
    """
    root = (root or dataset_root()).resolve()
    path = Path(os.path.expanduser(config.dataset_path))
    if path.is_absolute():
        return path
    # Strip the longest leading part of the path that repeats the root's last folders
    # ("datasets/omniglot" under ".../datasets"). Never consult the working directory: the
    # same config must name the same folder wherever it is run from.
    for n in range(min(len(path.parts), len(root.parts) - 1), 0, -1):
        if path.parts[:n] == root.parts[-n:]:
            return root.joinpath(*path.parts[n:])
    return root / path


__all__ = [
    "CONFIG_FIELDS",
    "OMITTED_AT_DEFAULT",
    "ExperimentConfig",
    "canonical_json",
    "config_hash",
    "dataset_root",
    "from_dict",
    "load_config",
    "replace",
    "resolve_dataset_path",
    "save_config",
    "thaw_json",
    "to_dict",
    "to_json",
    "training_differences",
]
