"""The shipped text suite (experiment_template_config/text.toml) is committed and
``--check`` clean, in its own folders, with the methods and encoders it names."""

from __future__ import annotations

from metasuite.cli import main
from metasuite.config import REPO_ROOT, load_config
from metasuite.suite.sweep import expand, load_suite


def test_committed_text_suite_is_up_to_date(capsys) -> None:
    suite_file = REPO_ROOT / "experiment_template_config" / "text.toml"
    code = main(["generate", "--suite", str(suite_file), "--check"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "48 experiments, 144 files up to date" in captured.out
    suite = load_suite(suite_file)
    assert suite.config_dir == REPO_ROOT / "text" / "experiment_config"
    seen = set()
    for e in expand(suite):
        cfg = load_config(e.config_path)
        assert cfg == e.config and cfg.modality == "text"
        assert cfg.dataset_path == "wordnet_glosses" and cfg.num_classes_per_set == 5
        seen.add((cfg.backbone, cfg.meta_learner, cfg.second_order, cfg.num_samples_per_class))
    assert {(b, learner, order) for b, learner, order, _ in seen} == {
        (b, learner, order)
        for b in ("hf", "text_conv")
        for learner, order in (("maml", True), ("maml", False), ("anil", True), ("reptile", False))
    }
    assert {shots for *_, shots in seen} == {1, 5}
    for script in (REPO_ROOT / "text" / "experiment_scripts").glob("*.sh"):
        assert str(REPO_ROOT) not in script.read_text(), script
