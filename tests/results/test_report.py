"""metasuite report: numbers over seeds checked by hand, plots written, nothing hidden."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from PIL import Image

from metasuite.cli import main
from metasuite.errors import UserError
from metasuite.results import report
from synthetic_experiments import MAML, dead_pid, make_config, write_experiment

# (ensemble mean, ensemble ci95, best-single mean, best-single ci95) per seed.
# By hand: ensemble 95, 97, 96 -> mean 96.00, sample std 1.00;
#          best single 90, 94, 92 -> mean 92.00, sample std 2.00.
PLUS_TESTS = [(0.95, 0.004, 0.90, 0.005), (0.97, 0.003, 0.94, 0.006), (0.96, 0.005, 0.92, 0.004)]
CURVES = [[(0.5, 0.4), (0.7, 0.6), (0.8, 0.7)], [(0.55, 0.5), (0.75, 0.62), (0.85, 0.66)],
          [(0.45, 0.42), (0.72, 0.58), (0.81, 0.72)]]  # fmt: skip


@pytest.fixture
def suite(tmp_path):
    root, configs = tmp_path / "experiments", tmp_path / "experiment_config"
    for seed, (test, curves) in enumerate(zip(PLUS_TESTS, CURVES, strict=True)):
        cfg = make_config(f"omni_plus_5w1s_s{seed}", seed)
        write_experiment(root, cfg, status="done", curves=curves, test=test, generated=configs)
    # MAML: one seed done, one still running (alive: this process), one killed.
    cfg = make_config("omni_maml_5w1s_s0", 0, **MAML)
    write_experiment(
        root, cfg, status="done", curves=CURVES[0], test=(0.9, 0.01, 0.88, 0.01), generated=configs
    )
    cfg = make_config("omni_maml_5w1s_s1", 1, **MAML)
    write_experiment(root, cfg, status="running", curves=CURVES[1][:2], generated=configs)
    cfg = make_config("omni_maml_5w1s_s2", 2, **MAML)
    write_experiment(root, cfg, status="running", curves=CURVES[2][:1], generated=configs,
                     pid=dead_pid())  # fmt: skip
    # MAML++ 20-way 5-shot: generated, never started.
    cfg = make_config("omni_plus_20w5s_s0", 0, way=20, shot=5)
    write_experiment(root, cfg, status=None, generated=configs)
    # Done but its test summary is missing: must be listed, not averaged as zero.
    cfg = make_config("omni_plus_5w5s_s0", 0, shot=5)
    write_experiment(root, cfg, status="done", curves=CURVES[0], generated=configs)
    return root, configs


def test_groups_are_configs_equal_up_to_seed(suite):
    groups, _ = report.collect(*suite)
    by_method = {(g.method, g.way, g.shot): sorted(m.name for m in g.members) for g in groups}
    assert by_method == {
        ("MAML", 5, 1): ["omni_maml_5w1s_s0", "omni_maml_5w1s_s1", "omni_maml_5w1s_s2"],
        ("MAML++", 5, 1): ["omni_plus_5w1s_s0", "omni_plus_5w1s_s1", "omni_plus_5w1s_s2"],
        ("MAML++", 5, 5): ["omni_plus_5w5s_s0"],
        ("MAML++", 20, 5): ["omni_plus_20w5s_s0"],
    }


def test_a_changed_setting_is_its_own_group_with_a_distinct_label(suite):
    root, configs = suite
    cfg = make_config("omni_plus_5w1s_wide_s0", 0, cnn_num_filters=32)
    write_experiment(root, cfg, status="done", curves=CURVES[0], test=PLUS_TESTS[0])
    groups, _ = report.collect(root, configs)
    labels = sorted(g.method for g in groups if (g.way, g.shot) == (5, 1))
    assert labels == ["MAML", "MAML++ (cnn_num_filters=32)", "MAML++ (cnn_num_filters=64)"]


def test_numbers_match_a_hand_computation(suite, tmp_path):
    root, configs = suite
    out = tmp_path / "report"
    files = report.write_report(root, configs, out, quiet=True)
    with files.summary_csv.open() as handle:
        rows = {(r["method"], r["way"], r["shot"]): r for r in csv.DictReader(handle)}
    plus = rows[("MAML++", "5", "1")]
    assert float(plus["ensemble_mean_pct"]) == pytest.approx(96.0)
    assert float(plus["ensemble_std_pct"]) == pytest.approx(1.0)
    assert float(plus["best_single_mean_pct"]) == pytest.approx(92.0)
    assert float(plus["best_single_std_pct"]) == pytest.approx(2.0)
    assert (plus["seeds_finished"], plus["seeds_total"], plus["seeds"]) == ("3", "3", "0; 1; 2")
    maml = rows[("MAML", "5", "1")]
    assert float(maml["ensemble_mean_pct"]) == pytest.approx(90.0)
    assert maml["ensemble_std_pct"] == ""  # one seed: no spread to report
    assert (maml["seeds_finished"], maml["seeds_total"]) == ("1", "3")
    not_started = rows[("MAML++", "20", "5")]
    assert not_started["ensemble_mean_pct"] == "" and not_started["seeds_finished"] == "0"

    with files.per_seed_csv.open() as handle:
        per_seed = {r["experiment"]: r for r in csv.DictReader(handle)}
    assert float(per_seed["omni_plus_5w1s_s1"]["ensemble_mean_pct"]) == pytest.approx(97.0)
    assert float(per_seed["omni_plus_5w1s_s1"]["ensemble_ci95_pct"]) == pytest.approx(0.3)
    assert float(per_seed["omni_plus_5w1s_s2"]["best_single_ci95_pct"]) == pytest.approx(0.4)
    # Epochs in the report count from 1, as the log does (stored 0-based in the folder).
    stored = json.loads((root / "omni_plus_5w1s_s1" / "test_summary.json").read_text())
    row = per_seed["omni_plus_5w1s_s1"]
    assert row["best_single_epoch"] == str(stored["best_single"]["epoch"] + 1)
    assert row["ensemble_epochs"] == " ".join(str(e + 1) for e in stored["ensemble"]["epochs"])

    md = files.results_md.read_text()
    assert "| MAML++ | ensemble | 96.00 ± 1.00% (3 seeds) |" in md
    assert "| MAML++ | best single | 92.00 ± 2.00% (3 seeds) |" in md
    assert "| MAML | ensemble | 90.00% (1/3 seeds) |" in md
    assert "97.00 ± 0.30% (600 tasks)" in md  # per seed: mean ± 95% CI over tasks
    # The paper layout: one column per way/shot of the data set.
    header = next(line for line in md.splitlines() if line.startswith("| Method |"))
    assert header == "| Method | Test model | 5-way 1-shot | 5-way 5-shot | 20-way 5-shot |"
    table_csv = out / "table_omniglot_dataset.csv"
    with table_csv.open() as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["Method", "Test model", "5-way 1-shot", "5-way 5-shot", "20-way 5-shot"]
    assert ["MAML++", "ensemble", "96.00 ± 1.00% (3 seeds)"] in [r[:3] for r in table]


def test_missing_and_unfinished_are_listed(suite, tmp_path):
    root, configs = suite
    files = report.write_report(root, configs, tmp_path / "r", quiet=True)
    _, excluded = report.collect(root, configs)
    assert {e.name: e.state for e in excluded} == {
        "omni_maml_5w1s_s1": "running",
        "omni_maml_5w1s_s2": "killed (resumable)",
        "omni_plus_20w5s_s0": "not started",
        "omni_plus_5w5s_s0": "done",
    }
    reason = next(e.reason for e in excluded if e.name == "omni_plus_5w5s_s0")
    assert "test_summary.json is missing" in reason
    assert (
        "8 experiments in 4 groups; 4 with test results, 4 not (fully)" in files.index.read_text()
    )
    for text in (files.index.read_text(), files.results_md.read_text()):
        section = text.split("## Not in the tables", 1)[1]
        for e in excluded:
            assert f"| {e.name} | {e.state} |" in section


def test_plots_are_valid_pngs_one_per_group_with_curves(suite, tmp_path):
    root, configs = suite
    out = tmp_path / "r"
    files = report.write_report(root, configs, out, quiet=True)
    # Three groups have finished epochs; the never-started one has no curve.
    assert len(files.plots) == 3
    for path in files.plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 20_000
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            width, height = image.size
            assert width > 800 and height > 300
            # Not a blank canvas: the curves put many colours on it.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    index = files.index.read_text()
    for path in files.plots:
        assert f"](plots/{path.name})" in index
    assert "No finished epoch yet" in index  # the 20-way group


def test_only_matching_nothing_says_so(suite, capsys):
    root, configs = suite
    argv = ["report", "--experiments-root", str(root), "--configs", str(configs), "--quiet"]
    assert main([*argv, "--only", "zzz"]) == 2
    err = capsys.readouterr().err.strip()
    # The suite is there; the message must blame the pattern, not claim it is empty.
    assert err.count("\n") == 0 and "--only 'zzz'" in err
    assert "no experiments under" not in err


NO_INNER_LOOP = {**MAML, "second_order": False}


def test_learners_without_an_inner_loop_are_labelled_by_name_alone():
    assert report.method_label(make_config("a", 0, **NO_INNER_LOOP, meta_learner="protonet")) == (
        "ProtoNet"
    )
    tuned = make_config("a", 0, **NO_INNER_LOOP, meta_learner="baseline", finetune_body=True)
    assert report.method_label(tuned) == "Baseline (body fine-tuned)"
    plus = make_config("a", 0, **NO_INNER_LOOP, meta_learner="baseline_pp")
    assert report.method_label(plus) == "Baseline++"


def test_method_labels_follow_the_paper():
    assert report.method_label(make_config("a", 0)) == "MAML++"
    assert report.method_label(make_config("a", 0, **MAML)) == "MAML"
    cfg = make_config("a", 0, **{**MAML, "use_multi_step_loss_optimization": True})
    assert report.method_label(cfg) == "MAML + MSL"
    assert report.method_label(make_config("a", 0, first_order_to_second_order_epoch=50,
                                           total_epochs=100)) == "MAML++ (DA)"  # fmt: skip
    assert report.method_label(make_config("a", 0, second_order=False)) == "MAML++ (first order)"


def test_cli_report(suite, tmp_path, capsys):
    root, configs = suite
    out = tmp_path / "out"
    args = ["report", "--experiments-root", str(root), "--configs", str(configs)]
    args += ["--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "report written" in capsys.readouterr().out
    assert (out / "index.md").is_file() and (out / "results.csv").is_file()
    # Writing the report into an experiment folder is refused.
    args[-2] = str(root / "omni_plus_5w1s_s0")
    assert main(args) == 2
    assert "experiment folder" in capsys.readouterr().err


def test_seed_labels_name_only_the_seeds_that_vary(tmp_path):
    root = tmp_path / "exp"
    for seed in range(3):  # the generated suite: train_seed varies, val/test fixed
        cfg = make_config(f"a_s{seed}", seed, val_seed=0)
        write_experiment(root, cfg, status="paused", curves=CURVES[0][:1])
    for train, val in ((0, 5), (1, 6)):
        cfg = make_config(f"b_{train}_{val}", train, val_seed=val, cnn_num_filters=16, test_seed=9)
        write_experiment(root, cfg, status="paused", curves=CURVES[0][:1])
    groups, _ = report.collect(root, None)
    labels = {m.name: g.seed_label(m) for g in groups for m in g.members}
    assert labels == {
        "a_s0": "0", "a_s1": "1", "a_s2": "2",
        "b_0_5": "train 0, val 5", "b_1_6": "train 1, val 6",
    }  # fmt: skip


@pytest.mark.slow
def test_real_tiny_run_manifest_status_and_report(tmp_path):
    """A real tiny Omniglot run, paused after one epoch and resumed: its manifest holds
    both runs; status shows it done; the report averages it with two synthetic seeds."""
    import hashlib
    import json
    import math

    import torch

    from builder_helpers import train, write_config
    from metasuite.config import REPO_ROOT, config_hash, load_config, replace
    from metasuite.results.status import DONE, list_suite, read_status
    from metasuite.training.manifest import read_manifest

    root, configs = tmp_path / "experiments", tmp_path / "experiment_config"
    configs.mkdir()
    path = write_config(configs, "tiny_s0", experiment_name="tiny_s0", total_epochs=2,
                        total_epochs_before_pause=1)  # fmt: skip
    first = train(path, root)
    assert first.returncode == 3, first.stderr  # paused after one epoch
    folder = root / "tiny_s0"
    # The last line says where the results are and what to run next.
    assert first.stdout.splitlines()[-1] == (
        f"checkpoint in {folder.resolve()}; run the same command to continue"
    )
    second = train(path, root)
    assert second.returncode == 0, second.stderr
    # Every epoch the log names counts from 1, like its "epoch 1/2": the best epoch and
    # the test ensemble are the stored 0-based indexes + 1.
    summary = json.loads((folder / "test_summary.json").read_text())
    shown = [e + 1 for e in summary["ensemble"]["epochs"]]
    assert f"ensemble of epochs {shown}" in second.stderr
    assert f"(epoch {summary['best_single']['epoch'] + 1})" in second.stderr
    assert "epoch 1/2: " in first.stderr and ", epoch 1) | lr" in first.stderr
    assert second.stdout.splitlines()[-1] == (
        f"results in {folder.resolve()} (test_summary.json, summary_statistics.csv); "
        f"next: metasuite report --experiments-root {root.resolve()}"
    )
    config = load_config(folder / "config.json")

    runs = read_manifest(folder)["runs"]
    assert [r["status"] for r in runs] == ["paused", "done"]
    assert all(r["ended"] for r in runs)
    assert runs[0]["resumed_from"] is None
    assert runs[1]["resumed_from"] == {"epoch": 1, "iteration": 6}
    for run in runs:
        assert run["command"]["argv"][1:] == ["train", *first.args[4:]]
        assert run["software"]["torch"] == torch.__version__
        assert run["devices"][0]["device"] == "cpu"
        assert run["config_hash"] == config_hash(config)
        assert run["seeds"] == {"train_seed": 0, "val_seed": 0, "test_seed": 0}
        archive = REPO_ROOT / "datasets" / "omniglot.tar.bz2"
        assert run["dataset"]["archive_sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        assert len(run["dataset"]["split_hash"]) == 64
    assert runs[1]["warnings"] == []

    (status,) = [read_status(e) for e in list_suite(root, configs)]
    real = json.loads((folder / "test_summary.json").read_text())
    assert status.state == DONE and (status.epoch, status.total_epochs) == (2, 2)
    assert status.test_accuracy == pytest.approx(real["ensemble"]["accuracy_mean"])

    # Two more seeds of the same config, written by hand.
    others = [(0.30, 0.02, 0.28, 0.02), (0.40, 0.03, 0.36, 0.02)]
    for seed, test in enumerate(others, start=1):
        cfg = replace(config, experiment_name=f"tiny_s{seed}", train_seed=seed, val_seed=seed)
        write_experiment(root, cfg, status="done", curves=CURVES[seed][:2], test=test)
    files = report.write_report(root, configs, tmp_path / "report", quiet=True)
    with files.summary_csv.open() as handle:
        (row,) = list(csv.DictReader(handle))
    values = [real["ensemble"]["accuracy_mean"], 0.30, 0.40]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert (row["seeds_finished"], row["seeds"]) == ("3", "0; 1; 2")
    assert float(row["ensemble_mean_pct"]) == pytest.approx(100 * mean, abs=1e-3)
    assert float(row["ensemble_std_pct"]) == pytest.approx(100 * std, abs=1e-3)
    (plot,) = files.plots
    assert plot.stat().st_size > 20_000


def test_folder_without_any_config_is_listed(suite, tmp_path):
    root, configs = suite
    (root / "stray").mkdir()
    (root / "stray" / "state.json").write_text('{"status": "failed", "message": "oom"}')
    files = report.write_report(root, configs, tmp_path / "r", quiet=True)
    _, excluded = report.collect(root, configs)
    stray = next(e for e in excluded if e.name == "stray")
    assert stray.state == "failed" and "no config.json" in stray.reason
    index = files.index.read_text()
    assert "9 experiments in 4 groups (and 1 without a usable config)" in index
    assert "| stray | failed |" in index


def test_read_only_experiments_root_is_one_line_naming_it(tmp_path, capsys):
    """The default --out is <experiments-root>/report: on a read-only root that is one
    line naming the folder (exit 2), and an --out elsewhere still works."""
    from readonly_helpers import read_only_folder

    configs = tmp_path / "experiment_config"
    cfg = make_config("omni_plus_5w1s_s0", 0)
    with read_only_folder(tmp_path / "ro") as ro:
        args = ["report", "--experiments-root", str(ro), "--configs", str(configs), "--quiet"]
        write_experiment(tmp_path / "unused", cfg, status=None, generated=configs)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"metasuite report: error: {ro}: cannot write here")
        assert main([*args, "--out", str(tmp_path / "elsewhere")]) == 0
        assert (tmp_path / "elsewhere" / "index.md").is_file()


def test_report_out_naming_a_file_is_one_line(tmp_path, capsys):
    """Issue 29: a FileExistsError traceback before."""
    configs = tmp_path / "experiment_config"
    cfg = make_config("omni_plus_5w1s_s0", 0)
    write_experiment(tmp_path / "exp", cfg, status="paused", curves=[(0.5, 0.4)], generated=configs)
    blocker = tmp_path / "results.md"
    blocker.write_text("my notes")
    args = ["report", "--experiments-root", str(tmp_path / "exp"), "--configs", str(configs)]
    assert main([*args, "--quiet", "--out", str(blocker)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"metasuite report: error: {blocker}: is a file, not a folder")
    assert blocker.read_text() == "my notes"


def test_report_removes_only_its_own_stale_files(suite, tmp_path):
    """--out EXISTING: a re-run removes the plot and table of a group and data set that
    vanished (the report wrote them), and never a file the user put there."""
    root, configs = suite
    out = tmp_path / "r"
    other = make_config("mini_plus_5w1s_s0", 0, dataset_name="mini_imagenet_full_size")
    write_experiment(root, other, status="done", curves=CURVES[0], test=(0.5, 0.01, 0.48, 0.01),
                     generated=configs)  # fmt: skip
    first = report.write_report(root, configs, out, quiet=True)
    mini_table = out / "table_mini_imagenet_full_size.csv"
    (mini_plot,) = [p for p in first.plots if p.name.startswith("mini")]
    assert mini_table.is_file() and mini_plot.is_file()
    mine = [out / "plots" / "my_figure.png", out / "notes.md", out / "table_mine.csv"]
    for path in mine:
        path.write_bytes(b"the user's own")

    (configs / "mini_plus_5w1s_s0.json").unlink()
    shutil.rmtree(root / "mini_plus_5w1s_s0")
    second = report.write_report(root, configs, out, quiet=True)
    assert not mini_table.exists() and not mini_plot.exists()
    assert all(path.read_bytes() == b"the user's own" for path in mine)
    assert set(second.plots) <= set(first.plots) and len(second.plots) == 3


def test_corrupt_summary_statistics_of_a_done_experiment_is_reported(suite, tmp_path):
    root, configs = suite
    path = root / "omni_plus_5w1s_s0" / "summary_statistics.csv"
    path.write_bytes(b"\x00\x17garbage;;\n\x01,2,3\n")
    index = report.write_report(root, configs, tmp_path / "r", quiet=True).index.read_text()
    (line,) = [x for x in index.splitlines() if "omni_plus_5w1s_s0" in x and "left out" in x]
    assert f"{path}: corrupt" in line
    # Truncated mid-row is damage too, and an emptied file of a done run is not "no epoch yet".
    write_experiment(tmp_path / "x", make_config("ok", 0), status="done", curves=CURVES[0])
    text = (tmp_path / "x" / "ok" / "summary_statistics.csv").read_text()
    path.write_text(text[: len(text) - 9])
    index = report.write_report(root, configs, tmp_path / "r", quiet=True).index.read_text()
    assert "corrupt (line 4 has" in index
    path.write_text(text.splitlines()[0] + "\n")
    index = report.write_report(root, configs, tmp_path / "r", quiet=True).index.read_text()
    assert "state is done but" in index and "has no epoch rows" in index


def test_repeats_of_one_seed_are_not_counted_as_seeds(tmp_path):
    """Three experiments that all ran seed 0 are one seed (three runs), not '3 seeds',
    and their spread is not a spread over seeds."""
    root = tmp_path / "exp"
    for i, acc in enumerate((0.90, 0.91, 0.92)):
        cfg = make_config(f"rep_{i}", 0)
        write_experiment(root, cfg, status="done", curves=CURVES[0], test=(acc, 0.01, acc, 0.01))
    (group,) = report.collect(root, None)[0]
    assert report.cell(group, "ensemble") == "91.00% (1 seed, 3 runs)"
    assert group.over_seeds("ensemble") == (pytest.approx(0.91), None)
    files = report.write_report(root, None, tmp_path / "r", quiet=True)
    with files.summary_csv.open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["seeds_finished"], row["runs_finished"], row["ensemble_std_pct"]) == ("1", "3", "")
    assert "use only 1 distinct seed" in files.index.read_text()


def test_meta_learners_are_their_own_groups_in_a_method_by_setting_table(tmp_path):
    """A methods suite: one row per learner, one column per way/shot, grouped by
    meta_learner (same keys otherwise), MAML family first."""
    root, configs = tmp_path / "experiments", tmp_path / "configs"
    reptile = {**MAML, "meta_learner": "reptile", "second_order": False}
    methods = {
        "maml": MAML,
        "fomaml": {**MAML, "second_order": False},
        "plus": {},
        "msgd": {**MAML, "meta_learner": "meta_sgd"},
        "anil": {**MAML, "meta_learner": "anil"},
        "reptile": reptile,
        "protonet": {**NO_INNER_LOOP, "meta_learner": "protonet"},
        "baseline": {**NO_INNER_LOOP, "meta_learner": "baseline"},
        "baseline_pp": {**NO_INNER_LOOP, "meta_learner": "baseline_pp"},
    }
    accuracies = {}
    for i, (method, keys) in enumerate(methods.items()):
        for way in (5, 20):
            acc = 0.5 + 0.05 * i + way / 1000
            accuracies[(method, way)] = acc
            cfg = make_config(f"omni_{method}_{way}w1s_s0", 0, way=way, **keys)
            write_experiment(
                root, cfg, status="done", curves=CURVES[0], test=(acc, 0.01, acc, 0.01),
                generated=configs,
            )  # fmt: skip
    groups, excluded = report.collect(root, configs)
    assert not excluded
    header, rows = report.paper_tables(groups)["omniglot_dataset"]
    assert header == ["Method", "Test model", "5-way 1-shot", "20-way 1-shot"]
    ensemble = [r for r in rows if r[1] == "ensemble"]
    assert [r[0] for r in ensemble] == [
        "MAML", "MAML (first order)", "MAML++", "Meta-SGD", "ANIL", "Reptile", "ProtoNet",
        "Baseline", "Baseline++",
    ]  # fmt: skip
    for row, method in zip(ensemble, methods, strict=True):
        for col, way in ((2, 5), (3, 20)):
            assert row[col].startswith(f"{100 * accuracies[(method, way)]:.2f}%"), (method, way)
    # The paper's published number: one row under MAML and MAML++ (second order, the
    # reference conv net on Omniglot), none under first-order MAML or other learners.
    paper = [r for r in rows if r[1] == report.PAPER_ROW]
    assert paper == [
        ["MAML", report.PAPER_ROW, "98.7 ± 0.4%", "95.8 ± 0.3%"],
        ["MAML++", report.PAPER_ROW, "99.47 ± 0.05%", "97.65 ± 0.05%"],
    ]
    assert rows.index(paper[0]) == 2 and rows.index(paper[1]) == 7  # after their own rows
    md = report.results_markdown(groups, excluded)
    assert "| MAML++ | paper (full protocol) | 99.47 ± 0.05% | 97.65 ± 0.05% |" in md
    assert "Antoniou et al., How to train your MAML, ICLR 2019" in md


def test_report_out_overwrites_only_what_a_report_wrote(suite, tmp_path):
    """Issue 29: a user's own results.md in --out was overwritten (other files were
    kept). Refused up front, one line, nothing written; a report's own files are
    rewritten as before."""
    root, configs = suite
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.md").write_text("my notes")
    with pytest.raises(UserError, match=r"results\.md: not written by metasuite report"):
        report.write_report(root, configs, out, quiet=True)
    assert sorted(p.name for p in out.iterdir()) == ["results.md"]
    assert (out / "results.md").read_text() == "my notes"
    (out / "results.md").unlink()
    first = report.write_report(root, configs, out, quiet=True)
    again = report.write_report(root, configs, out, quiet=True)  # its own files: rewritten
    assert again.results_md.read_text() == first.results_md.read_text() != "my notes"
