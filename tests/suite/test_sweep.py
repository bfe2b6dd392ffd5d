"""Suite file → ordered, validated experiments (metasuite.suite.sweep)."""

from __future__ import annotations

import json
import shlex

import pytest

from metasuite.config import REPO_ROOT
from metasuite.errors import ConfigError
from metasuite.suite.render import make_environment, render_string
from metasuite.suite.sweep import DEFAULT_SUITE, combinations, expand, load_suite
from suite_helpers import TINY_NAMES, TINY_SUITE, TINY_TEMPLATE, write_suite


def test_product_order_zip_and_exclude(tmp_path):
    suite = load_suite(write_suite(tmp_path))
    names = [e.name for e in expand(suite)]
    # method varies slowest, seed fastest; (maml, 20-way) is excluded.
    assert names == TINY_NAMES
    for exp in expand(suite):
        # The zip group keeps method and plus_plus paired.
        assert exp.values["plus_plus"] == (exp.values["method"] == "maml++")
        assert exp.config.per_step_bn_statistics == exp.values["plus_plus"]
        assert exp.config.num_classes_per_set == exp.values["way"]
        assert exp.config.train_seed == exp.values["seed"]
        assert exp.config.experiment_name == exp.name
        assert exp.config_path == tmp_path / "experiment_config" / f"{exp.name}.json"
        assert exp.script_path == tmp_path / "experiment_scripts" / f"{exp.name}.sh"


def test_root_override_and_default_dirs(tmp_path):
    path = write_suite(tmp_path / "a")
    suite = load_suite(path, root=tmp_path / "b")
    assert suite.config_dir == tmp_path / "b" / "experiment_config"
    assert suite.script_dir == tmp_path / "b" / "experiment_scripts"


def test_exclude_list_means_any_of(tmp_path):
    text = TINY_SUITE + '\n[[exclude]]\nseed = [0, 1]\nway = 5\nmethod = "maml++"\n'
    names = [e.name for e in expand(load_suite(write_suite(tmp_path, text)))]
    assert names == [
        "maml_5way_1shot_s0",
        "maml_5way_1shot_s1",
        "maml++_20way_1shot_s0",
        "maml++_20way_1shot_s1",
    ]


def test_exclude_that_matches_nothing_is_an_error(tmp_path):
    # way = "20" (a string) never equals the grid's integer 20: a typo, not a no-op.
    text = TINY_SUITE.replace("way = 20\n", 'way = "20"\n')
    with pytest.raises(ConfigError, match=r"exclude #1 .* matches no combination"):
        combinations(load_suite(write_suite(tmp_path, text)))


@pytest.mark.parametrize("value", ["{ a = 1 }", "[[20]]", "[]"])
def test_exclude_value_that_is_not_a_scalar_is_a_config_error(tmp_path, value):
    # A table or nested list used to reach a set() and raise TypeError (a traceback).
    text = TINY_SUITE.replace("way = 20\n", f"way = {value}\n")
    with pytest.raises(ConfigError, match=r"exclude #1: way must be a value or a non-empty"):
        load_suite(write_suite(tmp_path, text))


def test_exclude_unknown_variable_suggests(tmp_path):
    text = TINY_SUITE.replace('method = "maml"\nway = 20', 'methd = "maml"')
    with pytest.raises(
        ConfigError, match=r"'methd' is not a grid variable \(did you mean 'method'"
    ):
        load_suite(write_suite(tmp_path, text))


def test_invalid_combination_names_template_values_and_field(tmp_path):
    # 1-way tasks are invalid: the error must say which template, which values, which field.
    text = TINY_SUITE.replace("way = [5, 20]", "way = [5, 1]").replace("way = 20", "way = 1")
    with pytest.raises(ConfigError) as info:
        expand(load_suite(write_suite(tmp_path, text)))
    message = str(info.value)
    assert "experiment_template_config/tiny.json.j2" in message
    assert "method='maml++'" in message and "way=1" in message and "seed=0" in message
    assert "num_classes_per_set must be an integer >= 2" in message
    assert "(and 1 more combinations fail)" in message  # seed 1 fails too


def test_undefined_variable_names_template_line_and_variable(tmp_path):
    template = TINY_TEMPLATE.replace("{{ shot | tojson }}", "{{ shots | tojson }}")
    with pytest.raises(ConfigError) as info:
        expand(load_suite(write_suite(tmp_path, template=template)))
    message = str(info.value)
    line = 1 + next(i for i, t in enumerate(template.splitlines()) if "shots" in t)
    assert f"tiny.json.j2:{line}" in message
    assert "'shots' is undefined" in message
    assert "method='maml'" in message


def test_suite_or_template_not_utf8_is_a_config_error(tmp_path):
    # Latin-1 bytes used to escape as UnicodeDecodeError (a traceback).
    path = write_suite(tmp_path)
    template = path.parent / "tiny.json.j2"
    template.write_bytes(template.read_bytes().replace(b"{", b'{"x": "caf\xe9",', 1))
    with pytest.raises(ConfigError, match=r"tiny\.json\.j2: not UTF-8 text .*method="):
        expand(load_suite(path))
    path.write_bytes(b'[suite]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"suite\.toml: not UTF-8 text"):
        load_suite(path)


def test_unknown_config_key_is_reported_with_suggestion(tmp_path):
    template = TINY_TEMPLATE.replace('"batch_size"', '"batch_sise"')
    with pytest.raises(ConfigError, match=r"unknown key 'batch_sise' \(did you mean 'batch_size'"):
        expand(load_suite(write_suite(tmp_path, template=template)))


def test_rendered_json_error_shows_line(tmp_path):
    template = TINY_TEMPLATE.replace('"batch_size": 2,', '"batch_size": 2,,')
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 8"):
        expand(load_suite(write_suite(tmp_path, template=template)))


def test_duplicate_names_are_an_error(tmp_path):
    text = TINY_SUITE.replace("_s{{ seed }}", "")
    with pytest.raises(ConfigError, match=r"same name 'maml_5way_1shot'.*seed=0.*seed=1"):
        expand(load_suite(write_suite(tmp_path, text)))


def test_names_must_be_usable_as_file_names(tmp_path):
    text = TINY_SUITE.replace('naming = "', 'naming = "a/')
    with pytest.raises(ConfigError, match=r"experiment names must be"):
        expand(load_suite(write_suite(tmp_path, text)))


def test_experiment_name_in_template_must_match_naming(tmp_path):
    template = TINY_TEMPLATE.replace("{{ experiment_name | tojson }}", '"fixed"')
    with pytest.raises(ConfigError, match=r"experiment_name is 'fixed' but suite.naming gives"):
        expand(load_suite(write_suite(tmp_path, template=template)))


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ("[constants]", "[constanst]", r"unknown table 'constanst' \(did you mean 'constants'"),
        ('config_template = "tiny.json.j2"', "", r"suite.config_template is missing"),
        ("naming =", "nameing =", r"unknown key suite.nameing"),
        ("plus_plus = [false, true]", "plus_plus = [false]", r"zip group must have one length"),
        ("seed = [0, 1]", "seed = []", r"grid.seed must be a non-empty list"),
        ("seed = [0, 1]", "seed = [0, 0]", r"grid.seed lists a value twice"),
        ("seed = [0, 1]", "experiment_name = [0, 1]", r"'experiment_name' is set by the generator"),
        ("epochs = 2", "way = 2", r"'way' is both a constant and a grid variable"),
        ("[grid]", "[grid", r"not valid TOML"),
        ("plus_plus = [false, true]", "plus_plus = [false, false]", None),
        (
            'config_template = "tiny.json.j2"',
            'config_template = "tiny.json.j2"\nconfig_keys = ["epochs"]',
            r"config_keys: 'epochs' is not a config key",
        ),
        (
            'config_template = "tiny.json.j2"',
            'config_template = "tiny.json.j2"\nconfig_keys = ["meta_learning_rate"]',
            r"'meta_learning_rate' is neither a grid variable nor a constant",
        ),
    ],
)
def test_suite_file_mistakes(tmp_path, old, new, pattern):
    assert old in TINY_SUITE
    if pattern is None:  # zip columns may repeat values; whole rows may not
        text = TINY_SUITE.replace(old, new).replace('"maml++"]', '"maml"]')
        pattern = r"grid.method: the zip group holds the same row twice"
    else:
        text = TINY_SUITE.replace(old, new)
    path = write_suite(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern) as info:
        expand(load_suite(path))
    assert str(path) in str(info.value)


def test_config_keys_are_set_over_the_template_and_zip_columns_may_repeat(tmp_path):
    """A promoted search's suite: tuned values (here meta_learning_rate, not in the
    template) reach the config through [suite] config_keys; two rows of a zip group may
    share a value in one column."""
    text = TINY_SUITE.replace(
        'config_template = "tiny.json.j2"',
        'config_template = "tiny.json.j2"\nconfig_keys = ["meta_learning_rate"]',
    ).replace(
        'method = { method = ["maml", "maml++"], plus_plus = [false, true] }',
        'method = { method = ["maml", "maml++"], plus_plus = [true, true], '
        "meta_learning_rate = [0.002, 0.0005] }",
    )
    text = text.replace('[[exclude]]\nmethod = "maml"\nway = 20\n', "")
    experiments = expand(load_suite(write_suite(tmp_path, text)))
    rates = {e.values["method"]: e.config.meta_learning_rate for e in experiments}
    assert rates == {"maml": 0.002, "maml++": 0.0005}
    assert all(e.config.per_step_bn_statistics for e in experiments)


def test_only_selects_by_shell_pattern_but_validates_everything(tmp_path):
    suite = load_suite(write_suite(tmp_path))
    assert [e.name for e in expand(suite, only=["*20way*s1"])] == ["maml++_20way_1shot_s1"]
    with pytest.raises(ConfigError, match=r"--only nothing\* matches none of the 6 experiments"):
        expand(suite, only=["nothing*"])
    bad = TINY_SUITE.replace("way = [5, 20]", "way = [5, 1]").replace("way = 20", "way = 1")
    with pytest.raises(ConfigError, match="num_classes_per_set"):
        expand(load_suite(write_suite(tmp_path, bad)), only=["*5way*"])


def test_missing_suite_file(tmp_path):
    with pytest.raises(ConfigError, match="suite file not found"):
        load_suite(tmp_path / "nope.toml")


def test_filters_quote_for_json_and_shell(tmp_path):
    env = make_environment([tmp_path])
    tricky = 'it\'s a "name" with $HOME and spaces'
    rendered = render_string(env, "{{ v | tojson }}", {"v": tricky}, "test")
    assert json.loads(rendered) == tricky
    rendered = render_string(env, "echo {{ v | shquote }}", {"v": tricky}, "test")
    assert shlex.split(rendered) == ["echo", tricky]


# ------------------------------------------------------------------ the paper's suite


def test_paper_suite_has_the_36_experiments_with_paper_hyper_parameters():
    suite = load_suite(DEFAULT_SUITE)
    assert suite.root == REPO_ROOT
    experiments = expand(suite)
    assert len(experiments) == 36
    assert len({e.name for e in experiments}) == 36
    omniglot = [e for e in experiments if e.values["dataset"] == "omniglot"]
    mini = [e for e in experiments if e.values["dataset"] == "mini_imagenet"]
    assert len(omniglot) == 24 and len(mini) == 12
    assert {(e.config.num_classes_per_set, e.config.num_samples_per_class) for e in omniglot} == {
        (5, 1),
        (5, 5),
        (20, 1),
        (20, 5),
    }
    assert {(e.config.num_classes_per_set, e.config.num_samples_per_class) for e in mini} == {
        (5, 1),
        (5, 5),
    }
    for e in experiments:
        c = e.config
        assert c.train_seed == e.values["seed"] in (0, 1, 2)
        assert c.val_seed == 0
        assert (c.total_epochs, c.total_iter_per_epoch, c.num_evaluation_tasks) == (100, 500, 600)
        assert c.number_of_training_steps_per_iter == c.number_of_evaluation_steps_per_iter == 5
        assert c.second_order and c.learnable_bn_gamma and c.learnable_bn_beta
        plus = e.values["method"] == "maml++"
        assert c.per_step_bn_statistics is plus
        assert c.learnable_per_layer_per_step_inner_loop_learning_rate is plus
        assert c.use_multi_step_loss_optimization is plus
        assert e.name == (
            f"{e.values['dataset']}_{e.values['method']}_{c.num_classes_per_set}way_"
            f"{c.num_samples_per_class}shot_s{c.train_seed}"
        )
    for e in omniglot:
        c = e.config
        assert (c.batch_size, c.cnn_num_filters, c.init_inner_loop_learning_rate) == (8, 64, 0.1)
        assert (c.image_height, c.image_width, c.image_channels) == (28, 28, 1)
        assert c.dataset_path == "omniglot_dataset" and c.is_omniglot
        assert not c.sets_are_pre_split
    for e in mini:
        c = e.config
        assert (c.batch_size, c.cnn_num_filters, c.init_inner_loop_learning_rate) == (2, 48, 0.01)
        assert (c.image_height, c.image_width, c.image_channels) == (84, 84, 3)
        assert c.dataset_path == "mini_imagenet_full_size" and not c.is_omniglot
        assert c.sets_are_pre_split and c.num_target_samples == 15


def test_a_grid_too_large_is_counted_and_refused_before_expansion(tmp_path, monkeypatch):
    """Issue 29: 10^8 combinations used to grow memory without end before writing
    anything; the grid is counted (a product of axis lengths) first."""
    seeds = "[" + ", ".join(str(i) for i in range(10_000)) + "]"
    text = TINY_SUITE.replace("seed = [0, 1]", f"seed = {seeds}\nlr = {seeds}")
    path = write_suite(tmp_path, text)

    def never(*args, **kwargs):
        raise AssertionError("expanded before counting")

    monkeypatch.setattr("metasuite.suite.sweep.itertools.product", never)
    with pytest.raises(ConfigError) as info:
        expand(load_suite(path))
    message = str(info.value)
    assert "[grid] has 400,000,000 combinations (2 method/plus_plus x 2 way x 1 shot" in message
    assert "at most 100,000" in message and "\n" not in message


def test_a_rendered_config_naming_a_key_twice_is_refused(tmp_path):
    template = TINY_TEMPLATE.replace('"batch_size": 2,', '"batch_size": 2,\n  "batch_size": 8,')
    with pytest.raises(ConfigError, match=r"rendered config is key 'batch_size' appears twice"):
        expand(load_suite(write_suite(tmp_path, template=template)))


def test_a_naming_pattern_giving_long_names_is_refused(tmp_path):
    text = TINY_SUITE.replace('naming = "{{ method }}', "naming = \"{{ 'x' * 300 }}{{ method }}")
    with pytest.raises(ConfigError, match=r"suite.naming gives 'x+.*must be at most 128"):
        expand(load_suite(write_suite(tmp_path, text)))


def test_a_deeply_nested_suite_file_is_one_line(tmp_path):
    text = TINY_SUITE.replace("shot = [1]", "shot = " + "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match=r"suite\.toml: arrays or tables nested too deeply"):
        load_suite(write_suite(tmp_path, text))
