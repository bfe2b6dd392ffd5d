"""``metasuite generate``: deterministic files, --check, --clean, --only, and the paper suite."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from metasuite.cli import main
from metasuite.config import REPO_ROOT, load_config, to_json
from metasuite.suite.sweep import DEFAULT_SUITE, expand, load_suite
from suite_helpers import TINY_NAMES, TINY_SUITE, write_suite


def _snapshot(root):
    """Bytes, mode and mtime of every generated file."""
    out = {}
    for folder in ("experiment_config", "experiment_scripts"):
        for path in sorted((root / folder).iterdir()):
            st = path.stat()
            out[path.relative_to(root).as_posix()] = (path.read_bytes(), st.st_mode, st.st_mtime_ns)
    return out


@pytest.fixture
def generated(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths are printed relative to the current directory
    suite = write_suite(tmp_path)
    assert main(["generate", "--suite", str(suite)]) == 0
    assert capsys.readouterr().out.strip().endswith("6 experiments: 12 written, 0 unchanged")
    return tmp_path, suite


def test_generate_writes_valid_configs_and_executable_scripts(generated):
    root, suite = generated
    configs = sorted(p.name for p in (root / "experiment_config").iterdir())
    scripts = sorted(p.name for p in (root / "experiment_scripts").iterdir())
    assert configs == sorted(f"{n}.json" for n in TINY_NAMES)
    assert scripts == sorted(f"{n}.sh" for n in TINY_NAMES)
    for exp in expand(load_suite(suite)):
        config = load_config(exp.config_path)
        assert config == exp.config
        assert exp.config_path.read_text() == to_json(config)
        assert os.access(exp.script_path, os.X_OK)
        text = exp.script_path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n")
        assert f'--config "${{here}}/"../experiment_config/{exp.name}.json' in text
        # No absolute path of this machine: committed scripts must be portable.
        assert str(root) not in text.replace(str(suite), "")


def test_regeneration_is_byte_identical_and_writes_nothing(generated, capsys):
    root, suite = generated
    before = _snapshot(root)
    assert main(["generate", "--suite", str(suite)]) == 0
    assert capsys.readouterr().out.strip() == "6 experiments: 0 written, 12 unchanged"
    assert _snapshot(root) == before  # same bytes, modes and mtimes: nothing rewritten
    assert main(["generate", "--suite", str(suite), "--check"]) == 0
    assert "12 files up to date" in capsys.readouterr().out


def test_check_reports_stale_and_missing_and_writes_nothing(generated, capsys):
    root, suite = generated
    stale = root / "experiment_config" / "maml_5way_1shot_s0.json"
    stale.write_text(stale.read_text().replace('"batch_size": 2', '"batch_size": 3'))
    missing = root / "experiment_scripts" / "maml++_20way_1shot_s1.sh"
    missing.unlink()
    not_executable = root / "experiment_scripts" / "maml_5way_1shot_s1.sh"
    not_executable.chmod(0o644)
    before = _snapshot(root)

    assert main(["generate", "--suite", str(suite), "--check"]) == 1
    captured = capsys.readouterr()
    assert "stale: experiment_config/maml_5way_1shot_s0.json" in captured.out
    assert '-  "batch_size": 3,' in captured.out and '+  "batch_size": 2,' in captured.out
    assert "missing: experiment_scripts/maml++_20way_1shot_s1.sh" in captured.out
    assert "stale: experiment_scripts/maml_5way_1shot_s1.sh" in captured.out
    assert "not executable" in captured.out
    assert "3 of 12 generated files out of date" in captured.err
    assert _snapshot(root) == before

    assert main(["generate", "--suite", str(suite)]) == 0
    assert capsys.readouterr().out.strip() == "6 experiments: 3 written, 9 unchanged"
    assert os.access(not_executable, os.X_OK) and missing.exists()
    assert main(["generate", "--suite", str(suite), "--check"]) == 0


def test_files_the_grid_no_longer_produces_are_listed_then_cleaned(generated, capsys):
    root, suite = generated
    suite.write_text(TINY_SUITE.replace("seed = [0, 1]", "seed = [0]"))
    assert main(["generate", "--suite", str(suite)]) == 0
    out = capsys.readouterr().out
    dropped = [n for n in TINY_NAMES if n.endswith("_s1")]
    assert out.count("kept;") == 6
    for name in dropped:
        assert f"(kept; --clean removes it): experiment_config/{name}.json" in out
        assert f"(kept; --clean removes it): experiment_scripts/{name}.sh" in out
        assert (root / "experiment_scripts" / f"{name}.sh").exists()
    assert out.strip().endswith("3 experiments: 0 written, 6 unchanged")

    assert main(["generate", "--suite", str(suite), "--check"]) == 1
    assert capsys.readouterr().out.count("extra: ") == 6

    assert main(["generate", "--suite", str(suite), "--clean"]) == 0
    assert capsys.readouterr().out.count("removed ") == 6
    for name in dropped:
        assert not (root / "experiment_config" / f"{name}.json").exists()
        assert not (root / "experiment_scripts" / f"{name}.sh").exists()
    assert len(list((root / "experiment_config").iterdir())) == 3
    assert main(["generate", "--suite", str(suite), "--check"]) == 0


def test_only_writes_the_matching_experiments(tmp_path, capsys):
    suite = write_suite(tmp_path)
    assert main(["generate", "--suite", str(suite), "--only", "*20way*"]) == 0
    assert capsys.readouterr().out.strip() == "2 experiments: 4 written, 0 unchanged"
    assert sorted(p.stem for p in (tmp_path / "experiment_config").iterdir()) == [
        "maml++_20way_1shot_s0",
        "maml++_20way_1shot_s1",
    ]
    # With --only, other experiments' absence is not reported as missing.
    assert main(["generate", "--suite", str(suite), "--only", "*20way*", "--check"]) == 0


def test_suite_root_option_redirects_the_output(tmp_path, capsys):
    suite = write_suite(tmp_path / "templates_here")
    assert main(["generate", "--suite", str(suite), "--suite-root", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out" / "experiment_config").iterdir())) == 6
    assert not (tmp_path / "templates_here" / "experiment_config").exists()
    assert "deprecated" not in capsys.readouterr().err


def test_old_root_option_still_works_with_one_warning_line(tmp_path, capsys):
    suite = write_suite(tmp_path / "templates_here")
    assert main(["generate", "--suite", str(suite), "--root", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out" / "experiment_config").iterdir())) == 6
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: --root is deprecated here; use --suite-root (the folder of the "
                   "suite's generated files)"]  # fmt: skip
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    help_text = capsys.readouterr().out
    assert "--suite-root" in help_text and " --root" not in help_text


def test_invalid_combination_writes_nothing_and_exits_2(tmp_path, capsys):
    # seed 7 is valid (negative seeds are not, since config 7f9b370): shot=0 must fail first.
    text = TINY_SUITE.replace("seed = [0, 1]", "seed = [0, 7]")
    suite = write_suite(tmp_path, text.replace("shot = [1]", "shot = [1, 0]"))
    assert main(["generate", "--suite", str(suite)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("metasuite generate: error: experiment_template_config/tiny.json.j2 with")
    assert "shot=0" in err and "num_samples_per_class must be an integer >= 1" in err
    assert not (tmp_path / "experiment_config").exists()
    assert not (tmp_path / "experiment_scripts").exists()


@pytest.mark.parametrize("flags", [["--check", "--clean"], ["--clean", "--only", "x*"]])
def test_conflicting_flags_are_user_errors(tmp_path, capsys, flags):
    suite = write_suite(tmp_path)
    assert main(["generate", "--suite", str(suite), *flags]) == 2
    assert "cannot be combined" in capsys.readouterr().err


def test_committed_paper_suite_is_up_to_date(capsys):
    """CI: the committed experiment_config/ and experiment_scripts/ match the templates."""
    code = main(["generate", "--check"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "36 experiments, 108 files up to date" in captured.out
    assert load_suite(DEFAULT_SUITE).config_dir == REPO_ROOT / "experiment_config"


def test_committed_methods_suite_is_up_to_date_and_apart_from_the_paper_suite(capsys):
    """experiment_template_config/methods.toml: every learner x {5, 20}-way x 3 seeds, in
    its own folders and with its own experiment names, so both suites check clean."""
    methods = REPO_ROOT / "experiment_template_config" / "methods.toml"
    code = main(["generate", "--suite", str(methods), "--check"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "54 experiments, 162 files up to date" in captured.out
    suite, paper = load_suite(methods), load_suite(DEFAULT_SUITE)
    assert suite.config_dir == REPO_ROOT / "methods" / "experiment_config"
    mine = expand(suite)
    assert not {e.name for e in mine} & {e.name for e in expand(paper)}
    learners = {}
    for e in mine:
        cfg = load_config(e.config_path)
        assert cfg == e.config
        learners.setdefault(e.values["method"], set()).add(
            (cfg.meta_learner, cfg.second_order, cfg.use_multi_step_loss_optimization)
        )
    assert learners == {
        "maml": {("maml", True, False)},
        "fomaml": {("maml", False, False)},
        "maml++": {("maml", True, True)},
        "meta_sgd": {("meta_sgd", True, False)},
        "anil": {("anil", True, False)},
        "reptile": {("reptile", False, False)},
        "protonet": {("protonet", False, False)},
        "baseline": {("baseline", False, False)},
        "baseline_pp": {("baseline_pp", False, False)},
    }
    # No script names the checkout it was generated in.
    for script in (REPO_ROOT / "methods" / "experiment_scripts").glob("*.sh"):
        assert str(REPO_ROOT) not in script.read_text(), script


def test_committed_backbones_suite_is_up_to_date_and_names_both_networks(capsys):
    """experiment_template_config/backbones.toml: {conv, resnet12} x {MAML++, FOMAML,
    ANIL} on Omniglot 5/20-way 1-shot and mini-ImageNet 5-way 1/5-shot, 3 seeds."""
    suite_file = REPO_ROOT / "experiment_template_config" / "backbones.toml"
    code = main(["generate", "--suite", str(suite_file), "--check"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "72 experiments, 216 files up to date" in captured.out
    suite = load_suite(suite_file)
    seen = set()
    for e in expand(suite):
        cfg = load_config(e.config_path)
        assert cfg == e.config
        seen.add((cfg.backbone, cfg.meta_learner, cfg.second_order, cfg.per_step_bn_statistics))
        if cfg.backbone == "resnet12":
            assert dict(cfg.backbone_kwargs) == {"widths": (64, 160, 320, 640)}
    assert seen == {
        (b, m, so, pp)
        for b in ("conv", "resnet12")
        for m, so, pp in (("maml", True, True), ("maml", False, False), ("anil", True, False))
    }


@pytest.mark.parametrize("tool", ["generate_configs.py", "generate_scripts.py"])
def test_reference_style_entry_points(tool, tmp_path):
    """script_generation_tools/*.py run from their own folder, as reference users do."""
    folder = REPO_ROOT / "script_generation_tools"
    result = subprocess.run(
        [sys.executable, tool, "--check"], cwd=folder, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "36 experiments, 108 files up to date" in result.stdout
    suite = write_suite(tmp_path)
    result = subprocess.run(
        [sys.executable, folder / tool, "--suite", str(suite)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 experiments: 12 written" in result.stdout


def test_read_only_suite_root_is_one_line_naming_it(tmp_path, capsys):
    from readonly_helpers import read_only_folder

    suite = write_suite(tmp_path)
    with read_only_folder(tmp_path / "ro") as ro:
        assert main(["generate", "--suite", str(suite), "--suite-root", str(ro)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"metasuite generate: error: {ro}: cannot write here")
        assert list(ro.iterdir()) == []


def test_suite_root_whose_parent_is_missing_is_refused(tmp_path, capsys):
    suite = write_suite(tmp_path)
    root = tmp_path / "nonexistent" / "deep" / "x"
    assert main(["generate", "--suite", str(suite), "--suite-root", str(root)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"metasuite generate: error: --suite-root {root}: the parent folder")
    assert not (tmp_path / "nonexistent").exists()
    # The root itself may be new: generate creates that one folder.
    assert main(["generate", "--suite", str(suite), "--suite-root", str(tmp_path / "new")]) == 0
    assert (tmp_path / "new" / "experiment_config").is_dir()


def test_suite_root_naming_a_file_is_one_line(tmp_path, capsys):
    """Issue 29: NotADirectoryError / FileExistsError tracebacks before."""
    suite = write_suite(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("mine")
    assert main(["generate", "--suite", str(suite), "--suite-root", str(blocker)]) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line == (
        f"metasuite generate: error: {blocker}: is a file, not a folder; name a folder "
        "(or a path that does not exist yet)"
    )
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("order", [("--root", "--suite-root"), ("--suite-root", "--root")])
def test_root_and_suite_root_together_are_refused(tmp_path, capsys, order):
    """Issue 29: one of them was silently ignored."""
    suite = write_suite(tmp_path)
    first, second = order
    argv = [
        "generate",
        "--suite",
        str(suite),
        first,
        str(tmp_path / "a"),
        second,
        str(tmp_path / "b"),
    ]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "both name the suite root; give --suite-root only" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
