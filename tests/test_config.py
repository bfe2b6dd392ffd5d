"""The typed configuration: strict loading, legacy keys, round trips, hashes, data set paths."""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from pathlib import Path

import pytest

from metasuite.config import (
    CONFIG_FIELDS,
    OMITTED_AT_DEFAULT,
    REPO_ROOT,
    ExperimentConfig,
    canonical_json,
    config_hash,
    dataset_root,
    from_dict,
    load_config,
    replace,
    resolve_dataset_path,
    save_config,
    to_dict,
    to_json,
    training_differences,
)
from metasuite.errors import ConfigError, UserError

REFERENCE = Path(__file__).parent / "fixtures" / "reference_configs"
OMNIGLOT = REFERENCE / "omniglot_maml++-omniglot_1_8_0.1_64_5_0.json"
MINI_IMAGENET = REFERENCE / "mini-imagenet_maml++-mini-imagenet_5_2_0.01_48_5_0.json"
OLD_OMNIGLOT = REFERENCE / "omniglot_maml++_20_way_1_shot_1_batch_norm_log_64_seed_0.json"


def _write(tmp_path: Path, data: dict, name: str = "exp.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _load_quietly(path: Path) -> ExperimentConfig:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_config(path)


# ------------------------------------------------------------------ reference configs
def test_reference_omniglot_config_loads_verbatim() -> None:
    with pytest.warns(DeprecationWarning, match="'evalute_on_test_set_only' is deprecated"):
        config = load_config(OMNIGLOT)
    assert config.batch_size == 8
    assert config.dataset_name == "omniglot" and config.dataset_path == "omniglot"
    assert config.train_val_test_split == (0.70918052988, 0.03080714725, 0.2606284658)
    assert config.indexes_of_folders_indicating_class == (-3, -2)
    assert config.evaluate_on_test_set_only is False
    assert config.conv_padding is True
    assert config.is_omniglot
    assert config.continue_from_epoch == -2


def test_reference_mini_imagenet_config_loads_verbatim() -> None:
    config = _load_quietly(MINI_IMAGENET)
    assert (config.image_height, config.image_width, config.image_channels) == (84, 84, 3)
    assert config.sets_are_pre_split is True
    assert config.dataset_path == "mini_imagenet"
    assert (config.num_samples_per_class, config.num_target_samples) == (5, 15)
    assert config.train_val_test_split == (0.64, 0.16, 0.20)
    assert not config.is_omniglot


def test_older_reference_config_with_legacy_keys_loads() -> None:
    with pytest.warns(UserWarning) as record:
        config = load_config(OLD_OMNIGLOT)
    messages = " ".join(str(w.message) for w in record)
    assert "'total_unique_tasks' ignored" in messages and "'use_gdrive' ignored" in messages
    assert "gpu_to_use" not in messages  # accepted silently: devices come from the CLI
    assert config.num_classes_per_set == 20 and config.batch_size == 16
    assert "gpu_to_use" not in to_dict(config)


def test_reference_configs_keep_every_key_they_set() -> None:
    """Every non-legacy key of the reference files is a field, with the file's value."""
    for path in (OMNIGLOT, MINI_IMAGENET, OLD_OMNIGLOT):
        raw = json.loads(path.read_text())
        config = to_dict(_load_quietly(path))
        for key, value in raw.items():
            key = "evaluate_on_test_set_only" if key == "evalute_on_test_set_only" else key
            if key in ("gpu_to_use", "use_gdrive", "total_unique_tasks"):
                continue
            assert config[key] == value, (path.name, key)


# ------------------------------------------------------------------ strictness
def test_unknown_key_suggests_the_closest_field(tmp_path: Path) -> None:
    path = _write(tmp_path, {"batch_sise": 8})
    with pytest.raises(
        ConfigError, match=r"exp\.json: unknown key 'batch_sise' \(did you mean 'batch_size'\?\)"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'$"):
        from_dict({"zzz": 1})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("batch_size", "8", "an integer"),
        ("batch_size", 8.0, "an integer"),
        ("batch_size", True, "an integer"),
        ("meta_learning_rate", "0.001", "a number"),
        ("second_order", "true", "true/false"),
        ("conv_padding", 2, "true/false"),
        ("norm_layer", "group_norm", 'one of "batch_norm", "layer_norm"'),
        ("train_val_test_split", 0.7, "a list of numbers"),
        ("indexes_of_folders_indicating_class", [-3.0, -2], "a list of integers"),
        ("continue_from_epoch", "earliest", 'an integer or one of "from_scratch", "latest"'),
        ("dataset_path", None, "a string"),
    ],
)
def test_wrong_type_names_file_key_and_expectation(
    tmp_path: Path, key: str, value: object, expected: str
) -> None:
    path = _write(tmp_path, {key: value})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key} must be ")
    assert expected in message
    assert isinstance(caught.value, UserError)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"train_val_test_split": [0.5, 0.5, 0.5]}, "train_val_test_split"),
        ({"train_val_test_split": [0.8, 0.2]}, "train_val_test_split"),
        ({"train_val_test_split": [1.2, -0.1, -0.1]}, "train_val_test_split"),
        ({"num_classes_per_set": 1}, "num_classes_per_set"),
        ({"num_samples_per_class": 0}, "num_samples_per_class"),
        ({"num_target_samples": 0}, "num_target_samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"init_inner_loop_learning_rate": -0.1}, "init_inner_loop_learning_rate"),
        ({"weight_decay": -1e-4}, "weight_decay"),
        ({"min_learning_rate": -1e-5}, "min_learning_rate"),
        ({"meta_learning_rate": 0}, "meta_learning_rate"),
        ({"dropout_rate_value": 1.0}, "dropout_rate_value"),
        ({"image_channels": 2}, "image_channels"),
        ({"indexes_of_folders_indicating_class": [2]}, "indexes_of_folders_indicating_class"),
        ({"indexes_of_folders_indicating_class": []}, "indexes_of_folders_indicating_class"),
        (
            {"indexes_of_folders_indicating_class": [-(10**9)]},
            "indexes_of_folders_indicating_class",
        ),
        ({"continue_from_epoch": -3}, "continue_from_epoch"),
        ({"image_height": 8, "image_width": 8}, "num_stages"),
        ({"experiment_name": "a/b"}, "experiment_name"),
        ({"experiment_name": "my run"}, "experiment_name"),
        ({"experiment_name": "two\nlines"}, "experiment_name"),
        ({"experiment_name": ".hidden"}, "experiment_name"),
        ({"train_seed": -1}, "train_seed"),
        ({"train_seed": 2**70}, "train_seed"),
        ({"val_seed": -1}, "val_seed"),
        ({"test_seed": -3}, "test_seed"),
    ],
)
def test_out_of_range_values_are_rejected(tmp_path: Path, changes: dict, key: str) -> None:
    path = _write(tmp_path, changes)
    with pytest.raises(ConfigError, match=rf"^{path}: {key} must be "):
        load_config(path)


def test_reference_split_sum_of_1_0006_is_accepted() -> None:
    config = from_dict({"train_val_test_split": [0.70918052988, 0.03080714725, 0.2606284658]})
    assert sum(config.train_val_test_split) == pytest.approx(1.0006, abs=1e-4)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"per_step_bn_statistics": True, "norm_layer": "layer_norm"}, "norm_layer"),
        ({"evaluate_on_test_set_only": True, "continue_from_epoch": "from_scratch"}, "no trained"),
        (
            {
                "enable_inner_loop_optimizable_bn_params": True,
                "learnable_bn_gamma": False,
                "learnable_bn_beta": False,
            },
            "no BN parameters",
        ),
        ({"min_learning_rate": 0.01, "meta_learning_rate": 0.001}, "meta_learning_rate"),
    ],
)
def test_contradictory_settings_are_rejected(tmp_path: Path, changes: dict, words: str) -> None:
    path = _write(tmp_path, changes)
    with pytest.raises(ConfigError, match=str(path)) as caught:
        load_config(path)
    assert words in str(caught.value)


def test_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"batch_size": 8,\n}')
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON \(line 2"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_config(_write(tmp_path, [1, 2], "list.json"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match=r"binary\.json: not UTF-8"):
        load_config(binary)


# ------------------------------------------------------------------ legacy keys
def test_misspelt_evaluate_key_is_a_deprecated_alias() -> None:
    with pytest.warns(DeprecationWarning, match="use 'evaluate_on_test_set_only'"):
        config = from_dict({"evalute_on_test_set_only": True, "continue_from_epoch": "latest"})
    assert config.evaluate_on_test_set_only is True
    with pytest.warns(DeprecationWarning):
        same = from_dict({"evalute_on_test_set_only": False, "evaluate_on_test_set_only": False})
    assert same.evaluate_on_test_set_only is False
    with pytest.raises(ConfigError, match="remove 'evalute_on_test_set_only'"):
        from_dict({"evalute_on_test_set_only": True, "evaluate_on_test_set_only": False})


def test_backend_threads_is_a_deprecated_alias_of_grouped() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = from_dict({"backend": "threads"}, source="x.json")
        again = replace(config, cnn_num_filters=8)  # a round trip does not warn again
    assert config.backend == again.backend == "grouped"
    assert [str(w.message) for w in caught] == [
        "x.json: backend 'threads' is deprecated, use 'grouped'"
    ]
    assert all(w.category is DeprecationWarning for w in caught)
    with pytest.raises(ConfigError, match="backend must be one of"):
        from_dict({"backend": "thread"})


def test_gpu_to_use_is_ignored_silently_and_use_gdrive_with_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert from_dict({"gpu_to_use": 3}) == ExperimentConfig()
    with pytest.warns(UserWarning, match="legacy key 'use_gdrive' ignored"):
        assert from_dict({"use_gdrive": True}) == ExperimentConfig()
    with pytest.warns(UserWarning, match="'task_learning_rate' ignored.*init_inner_loop"):
        from_dict({"task_learning_rate": -1})


def test_zero_one_switches_of_old_configs_are_booleans() -> None:
    assert from_dict({"conv_padding": 1}).conv_padding is True
    assert from_dict({"conv_padding": 0}).conv_padding is False


# ------------------------------------------------------------------ round trips and hashes
def _non_default() -> ExperimentConfig:
    return replace(
        ExperimentConfig(),
        batch_size=3,
        train_val_test_split=[0.6, 0.2, 0.2],
        indexes_of_folders_indicating_class=[-2],
        continue_from_epoch="latest",
        norm_layer="batch_norm",
        test_seed=11,
        backend="loop",
        precision="bf16",
        meta_learning_rate=0.0005,
        conv_padding=False,
        dataset_path="mini_imagenet_full_size",
        max_images_per_class=500,
    )


def test_keys_added_later_are_written_only_when_set() -> None:
    """max_images_per_class left unset keeps configs generated before it (and their
    hashes) byte for byte; set, it is written and hashed like any key."""
    plain = ExperimentConfig()
    assert "max_images_per_class" not in json.loads(to_json(plain))
    assert to_dict(plain)["max_images_per_class"] is None
    capped = replace(plain, max_images_per_class=100)
    assert json.loads(to_json(capped))["max_images_per_class"] == 100
    assert config_hash(capped) != config_hash(plain)
    with pytest.raises(ConfigError, match=r"max_images_per_class must be an integer >= 1"):
        from_dict({"max_images_per_class": 0})


@pytest.mark.parametrize("config", [ExperimentConfig(), _non_default()], ids=["default", "changed"])
def test_save_then_load_is_lossless(tmp_path: Path, config: ExperimentConfig) -> None:
    path = tmp_path / "sub" / "config.json"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded == config
    assert to_json(loaded) == path.read_text()
    written = [
        name
        for name in CONFIG_FIELDS
        if name not in OMITTED_AT_DEFAULT
        or getattr(config, name) != ExperimentConfig.__dataclass_fields__[name].default
    ]
    assert list(json.loads(path.read_text())) == written  # field order
    assert config_hash(loaded) == config_hash(config)
    assert not list(path.parent.glob("*.tmp"))  # atomic write left nothing behind


def test_every_field_survives_the_round_trip() -> None:
    config = _non_default()
    again = from_dict(json.loads(to_json(config)))
    for f in fields(ExperimentConfig):
        assert getattr(again, f.name) == getattr(config, f.name), f.name
        assert type(getattr(again, f.name)) is type(getattr(config, f.name)), f.name


def test_hash_is_stable_under_key_order_and_changes_with_values() -> None:
    forward = to_dict(_non_default())
    backward = dict(reversed(list(forward.items())))
    assert list(forward) != list(backward)
    assert config_hash(from_dict(forward)) == config_hash(from_dict(backward))
    assert canonical_json(from_dict(backward)) == canonical_json(from_dict(forward))
    assert config_hash(from_dict(forward | {"batch_size": 4})) != config_hash(from_dict(forward))
    # A reference file and its loaded-then-saved copy hash the same.
    assert config_hash(_load_quietly(OMNIGLOT)) == config_hash(
        from_dict(json.loads(to_json(_load_quietly(OMNIGLOT))))
    )


def test_replace_validates_and_training_differences_lists_changes() -> None:
    base = ExperimentConfig()
    with pytest.raises(ConfigError, match="num_classes_per_set must be"):
        replace(base, num_classes_per_set=1)
    changed = replace(base, batch_size=4, num_dataprovider_workers=1)
    assert training_differences(base, changed) == ["batch_size: 8 -> 4"]


# ------------------------------------------------------------------ data set paths
def test_dataset_root_defaults_to_the_repo_and_follows_dataset_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATASET_DIR", raising=False)
    assert dataset_root() == REPO_ROOT / "datasets"
    monkeypatch.setenv("DATASET_DIR", str(tmp_path))
    assert dataset_root() == tmp_path.resolve()
    config = replace(ExperimentConfig(), dataset_path="omniglot_dataset")
    assert resolve_dataset_path(config) == tmp_path.resolve() / "omniglot_dataset"


@pytest.mark.parametrize(
    ("dataset_path", "relative"),
    [
        ("omniglot_dataset", "omniglot_dataset"),
        ("datasets/omniglot_dataset", "omniglot_dataset"),  # the reference habit
        ("datasets/sub/omniglot", "sub/omniglot"),
        ("sub/datasets_x", "sub/datasets_x"),
    ],
)
def test_root_is_not_prefixed_twice(
    dataset_path: str, relative: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DATASET_DIR", raising=False)
    config = replace(ExperimentConfig(), dataset_path=dataset_path)
    expected = REPO_ROOT / "datasets" / relative
    assert resolve_dataset_path(config) == expected
    monkeypatch.chdir(tmp_path)  # the working directory never matters
    assert resolve_dataset_path(config) == expected


def test_resolution_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    (root / "omniglot_dataset").mkdir(parents=True)
    config = replace(ExperimentConfig(), dataset_path="omniglot_dataset")
    for cwd in (tmp_path, root, root / "omniglot_dataset"):
        monkeypatch.chdir(cwd)
        assert resolve_dataset_path(config, root) == root / "omniglot_dataset"
    monkeypatch.chdir(tmp_path)
    nested = replace(ExperimentConfig(), dataset_path="data/omniglot_dataset")
    assert resolve_dataset_path(nested, root) == root / "omniglot_dataset"


def test_absolute_and_home_paths_are_kept(tmp_path: Path) -> None:
    absolute = replace(ExperimentConfig(), dataset_path=str(tmp_path / "x"))
    assert resolve_dataset_path(absolute, tmp_path / "root") == tmp_path / "x"
    home = replace(ExperimentConfig(), dataset_path="~/somewhere")
    assert resolve_dataset_path(home, tmp_path) == Path.home() / "somewhere"


def test_experiment_names_follow_the_generators_rule() -> None:
    """One rule for names: train accepts exactly the names `generate` may produce,
    including those of configs written for the reference repo."""
    from metasuite.config import is_experiment_name

    for good in (
        "omniglot_maml++_5way_1shot_s0",
        "mini-imagenet_5_2_0.01_48_5_0",
        "MAML++_Omniglot_20_way_1_shot_seed_0",
        "lr=0.1",
    ):
        assert is_experiment_name(good)
        from_dict({"experiment_name": good})
    for bad in ("", "a b", "a\nb", "a/b", ".", "..", "-x", "é"):
        assert not is_experiment_name(bad)


def test_meta_learner_defaults_to_maml_and_is_written_only_when_set() -> None:
    """Configs and hashes from before meta_learner existed are unchanged."""
    plain = ExperimentConfig()
    assert plain.meta_learner == "maml"
    assert "meta_learner" not in json.loads(to_json(plain))
    anil = from_dict({"meta_learner": "anil"})
    assert json.loads(to_json(anil))["meta_learner"] == "anil"
    assert config_hash(anil) != config_hash(plain)
    with pytest.raises(ConfigError, match=r"meta_learner must be one of \"maml\""):
        from_dict({"meta_learner": "relation_net"})


NO_INNER_LOOP = {
    "second_order": False,
    "use_multi_step_loss_optimization": False,
    "learnable_per_layer_per_step_inner_loop_learning_rate": False,
    "per_step_bn_statistics": False,
}


@pytest.mark.parametrize("learner", ["protonet", "baseline", "baseline_pp"])
def test_learners_without_an_inner_loop_refuse_its_keys(learner: str) -> None:
    base = {"meta_learner": learner, **NO_INNER_LOOP}
    assert from_dict(base, "c.json").meta_learner == learner
    for switch in (*NO_INNER_LOOP, "enable_inner_loop_optimizable_bn_params"):
        with pytest.raises(ConfigError) as err:
            from_dict({**base, switch: True}, "c.json")
        assert str(err.value).startswith(f"c.json: {switch} is true but meta_learner is")
        assert "\n" not in str(err.value)
    for key, value in {
        "init_inner_loop_learning_rate": 0.05,
        "number_of_training_steps_per_iter": 3,
        "number_of_evaluation_steps_per_iter": 10,
        "first_order_to_second_order_epoch": 2,
        "multi_step_loss_num_epochs": 3,
        "minimum_per_task_contribution": 0.1,
    }.items():
        with pytest.raises(ConfigError, match=f"c.json: {key} is {value} but meta_learner is"):
            from_dict({**base, key: value}, "c.json")
    # At their defaults the keys are accepted: generated configs write every key.
    from_dict({**base, "init_inner_loop_learning_rate": 0.1}, "c.json")
    with pytest.raises(ConfigError, match='backend is "grouped" but meta_learner'):
        from_dict({**base, "backend": "grouped"}, "c.json")


def test_finetune_keys_belong_to_the_baselines_and_are_written_only_when_set() -> None:
    plain = ExperimentConfig()
    for key in ("finetune_steps", "finetune_learning_rate", "finetune_body", "cosine_scale"):
        assert key not in json.loads(to_json(plain))
    base = {"meta_learner": "baseline_pp", **NO_INNER_LOOP}
    tuned = from_dict({**base, "finetune_steps": 20, "cosine_scale": 2.0})
    written = json.loads(to_json(tuned))
    assert written["finetune_steps"] == 20 and written["cosine_scale"] == 2.0
    assert "finetune_body" not in written
    with pytest.raises(ConfigError, match='finetune_steps is 20 but meta_learner is "maml"'):
        from_dict({"finetune_steps": 20})
    with pytest.raises(ConfigError, match='only "baseline_pp" use it'):
        from_dict({**base, "meta_learner": "baseline", "cosine_scale": 2.0})
    with pytest.raises(ConfigError, match="finetune_body is true but meta_learner is"):
        from_dict({**NO_INNER_LOOP, "meta_learner": "protonet", "finetune_body": True})
    for key, bad in (("finetune_steps", 0), ("finetune_learning_rate", 0), ("cosine_scale", -1)):
        with pytest.raises(ConfigError, match=f"{key} must be"):
            from_dict({**base, key: bad})


# ------------------------------------------------------------------ limits (issue 29)
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("total_epochs", 10**30),
        ("num_evaluation_tasks", 10**12),
        ("cnn_num_filters", 10**9),
        ("total_iter_per_epoch", 10**12),
        ("batch_size", 10**6),
        ("number_of_training_steps_per_iter", 10**6),
        ("num_classes_per_set", 10**7),
        ("max_images_per_class", 10**12),
        ("continue_from_epoch", 10**18),
    ],
)
def test_every_count_has_an_upper_bound(tmp_path: Path, key: str, value: int) -> None:
    path = _write(tmp_path, {key: value})
    with pytest.raises(ConfigError, match=rf"^{path}: {key} must be an integer <= [\d,]+, got"):
        load_config(path)


def test_every_integer_field_is_bounded_above() -> None:
    """A new count without an upper bound fails here, not in a user's allocation."""
    from metasuite.config import _HINTS, AT_MOST

    # Bounded by their own rules: seeds in [0, 2**63), channels 1 or 3, folder indexes
    # in [-64, 0).
    own_rule = {"train_seed", "val_seed", "test_seed", "image_channels"}
    own_rule.add("indexes_of_folders_indicating_class")
    counts = {
        f.name
        for f in fields(ExperimentConfig)
        if f.name not in own_rule and "int" in str(_HINTS[f.name]) and f.name in _HINTS
    }
    assert counts - set(AT_MOST) == set()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"cnn_num_filters": 8192, "num_stages": 4}, r"network of about [\d,]+ parameters"),
        (
            {"batch_size": 4096, "num_classes_per_set": 1000, "num_samples_per_class": 100},
            r"values per meta-batch; at most",
        ),
    ],
)
def test_counts_that_multiply_past_memory_are_refused_up_front(
    tmp_path: Path, changes: dict, words: str
) -> None:
    path = _write(tmp_path, changes)
    with pytest.raises(ConfigError, match=rf"^{path}: .*{words}"):
        load_config(path)


def test_the_largest_published_settings_stay_accepted() -> None:
    # mini-ImageNet 84x84x3, 48 filters, 5-way 5-shot 15 queries, batch 4; Omniglot
    # 20-way with 64 filters and 600 evaluation tasks; 150 epochs of 500 iterations.
    for changes in (
        dict(image_height=84, image_width=84, image_channels=3, cnn_num_filters=48,
             num_samples_per_class=5, num_target_samples=15, batch_size=4),
        dict(num_classes_per_set=20, cnn_num_filters=64, num_evaluation_tasks=600,
             total_epochs=150, total_iter_per_epoch=500, batch_size=16),
    ):  # fmt: skip
        from_dict(changes)


# ------------------------------------------------------------------ strict JSON (issue 29)
def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.json"
    path.write_text('{"batch_size": 2, "train_seed": 1, "batch_size": 8}')
    with pytest.raises(ConfigError, match=rf"^{path}: key 'batch_size' appears twice"):
        load_config(path)


def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match=rf"^{path}: nested 100,000 levels deep; at most"):
        load_config(path)


def test_long_experiment_names_are_refused_where_names_are_checked() -> None:
    from metasuite.config import MAX_EXPERIMENT_NAME_LENGTH, is_experiment_name

    assert is_experiment_name("a" * MAX_EXPERIMENT_NAME_LENGTH)
    assert not is_experiment_name("a" * (MAX_EXPERIMENT_NAME_LENGTH + 1))
    with pytest.raises(ConfigError, match=r"experiment_name must be at most 128 letters"):
        from_dict({"experiment_name": "x" * 256})
