"""The metrics sink: ``logs/metrics.jsonl`` and the TensorBoard run beside it.

The unit tests drive :class:`MetricsLog` directly; the end-to-end tests run the tiny
real-Omniglot experiment of ``builder_helpers``, kill it with SIGKILL at fault points
where the log and the event files are ahead of the checkpoint, resume it, and compare
the log and the event files with those of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import signal
from pathlib import Path
from typing import Any

import pytest

from builder_helpers import train, write_config
from metasuite.config import ExperimentConfig, config_hash, from_dict, to_json
from metasuite.errors import ConfigError
from metasuite.results.metrics_log import check_event_files
from metasuite.training.metrics import MetricsLog, keep_on_resume

TIMINGS = ("time", "epoch_time_s")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


def train_record(epoch: int, iteration: int) -> dict[str, Any]:
    return {"split": "train", "epoch": epoch, "iteration": iteration, "loss": 1.0 / iteration}


class FailingSink:
    name = "failing"

    def __init__(self) -> None:
        self.writes = 0
        self.closed = False

    def start(self, purge_step: int | None) -> None:
        self.purge_step = purge_step

    def write(self, record: Any) -> None:
        self.writes += 1
        raise OSError("disk gone")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


# ---------------------------------------------------------------------- unit


def test_keep_on_resume_rules() -> None:
    assert keep_on_resume(train_record(1, 8), epoch=1, iteration=8)
    assert not keep_on_resume(train_record(1, 9), epoch=1, iteration=8)
    val = {"split": "val", "epoch": 0, "iteration": 6}
    assert keep_on_resume(val, epoch=1, iteration=8)
    assert not keep_on_resume({**val, "epoch": 1}, epoch=1, iteration=12)
    assert not keep_on_resume({"split": "test", "epoch": 3, "iteration": 18}, 3, 18)


def test_start_cuts_back_to_the_checkpoint_and_names_a_damaged_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "logs" / "metrics.jsonl"
    path.parent.mkdir()
    lines = [json.dumps(train_record(0, i)) for i in range(1, 5)]
    lines.insert(2, "{not json")
    lines.append(json.dumps({"split": "val", "epoch": 0, "iteration": 4}))
    lines.append('{"split": "train", "epo')  # cut short by a kill mid-append
    path.write_text("\n".join(lines))
    log = MetricsLog(path)
    with caplog.at_level(logging.WARNING, logger="metasuite"):
        log.start(epoch=0, iteration=3)
    kept = records(path)
    assert [r["iteration"] for r in kept] == [1, 2, 3]
    damaged = [r.message for r in caplog.records if "damaged" in r.message]
    assert damaged == [f"{path} line 3 is damaged (not a metrics record); dropped"]
    # Buffered records reach the file only at a flush, after what was kept.
    log.add(train_record(0, 4))
    assert len(records(path)) == 3
    log.flush()
    assert [r["iteration"] for r in records(path)] == [1, 2, 3, 4]
    assert isinstance(records(path)[-1]["time"], float)
    log.close()
    # A fresh start (epoch 0, iteration 0) empties the log.
    MetricsLog(path).start(0, 0)
    assert path.read_text() == ""


def test_a_failing_sink_warns_once_and_the_log_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FailingSink()
    log = MetricsLog(tmp_path / "metrics.jsonl", [sink])
    with caplog.at_level(logging.WARNING, logger="metasuite"):
        log.start(0, 0)
        for i in range(1, 4):
            log.add(train_record(0, i))
        log.close()
    assert sink.purge_step is None and sink.writes == 1 and sink.closed
    warnings = [r.message for r in caplog.records if "sink failed" in r.message]
    assert warnings == ["failing sink failed (OSError: disk gone); training goes on without it"]
    assert [r["iteration"] for r in records(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_non_finite_numbers_are_written_as_null(tmp_path: Path) -> None:
    from metasuite.training.metrics import iteration_record

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.start(0, 0)
    log.add(iteration_record(0, 1, {"loss": math.nan, "accuracy": 0.5}))
    log.close()
    (row,) = records(tmp_path / "metrics.jsonl")
    assert row["loss"] is None and row["learning_rate"] is None and row["accuracy"] == 0.5


def test_tensorboard_key_keeps_old_config_hashes() -> None:
    default = ExperimentConfig()
    assert "tensorboard" not in to_json(default)
    off = from_dict({"tensorboard": False}, "off.json")
    assert off.tensorboard is False and '"tensorboard": false' in to_json(off)
    assert config_hash(from_dict({}, "a.json")) == config_hash(default) != config_hash(off)
    with pytest.raises(ConfigError, match="tensorboard"):
        from_dict({"tensorboard": "no"}, "bad.json")


# ---------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, omniglot_folder: Path) -> Path:
    base = tmp_path_factory.mktemp("metrics_reference")
    proc = train(write_config(base, tensorboard=True), base / "experiments")
    assert proc.returncode == 0, proc.stderr
    return base / "experiments" / "tiny"


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a TensorBoard run, as TensorBoard itself reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def raw_steps(folder: Path, tag: str) -> list[int]:
    """The steps of ``tag`` in every event file, in file order, nothing purged."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [
        event.step
        for path in sorted(folder.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        if any(v.tag == tag for v in event.summary.value)
    ]


@pytest.mark.slow
def test_killed_and_resumed_run_has_the_uninterrupted_log(
    uninterrupted: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard not installed (install.sh installs it)")
    reference = records(uninterrupted / "logs" / "metrics.jsonl")
    splits = [r["split"] for r in reference]
    assert splits.count("train") == 18 and splits.count("val") == 3 and splits[-1] == "test"
    assert [r["iteration"] for r in reference if r["split"] == "train"] == list(range(1, 19))
    val = [r for r in reference if r["split"] == "val"]
    # MSL over 2 epochs with 2 inner steps; after that only the final step's loss counts.
    assert [r["msl_weights"] for r in val] == [[0.5, 0.5], [0.25, 0.75], [0.0, 1.0]]
    assert set(val[0]["lslr"]) >= {"conv0.weight", "linear.bias"}
    assert all(len(steps) == 2 for steps in val[0]["lslr"].values())
    assert val[0]["lslr"] != val[-1]["lslr"]  # the rates are learned

    config, root = write_config(tmp_path, tensorboard=True), tmp_path / "experiments"
    # The epoch-end checkpoint at iteration 6 is killed mid-write: the log (flushed
    # first) and the event files hold iterations 5-6 and epoch 1's validation, the
    # checkpoint resumed from is iteration 4's. Then a kill after iteration 11, whose
    # records after checkpoint 10 were only buffered.
    for fault in ("checkpoint-write:3", "iteration:7"):
        killed = train(config, root, METASUITE_FAULT=fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr)
    folder = root / "tiny"
    ahead = records(folder / "logs" / "metrics.jsonl")
    assert ahead[-1]["iteration"] == 10
    final = train(config, root)
    assert final.returncode == 0, final.stderr
    assert without_timings(records(folder / "logs" / "metrics.jsonl")) == without_timings(reference)

    # TensorBoard: the event files hold steps 5-6 twice (written before the first kill
    # and again after it); TensorBoard shows each step once, with the log's values.
    assert raw_steps(folder / "tensorboard", "train/loss").count(5) == 2
    assert check_event_files(folder) == (3, None)  # the report's check passes real files
    got, want = scalars(folder / "tensorboard"), scalars(uninterrupted / "tensorboard")
    assert sorted(got) == sorted(want)
    assert {"train/loss", "val/accuracy", "msl/step_0", "lslr/conv0.weight/step_1"} <= set(got)
    for tag, series in want.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in series], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in series], rel=1e-6), tag
    assert [s for s, _ in got["train/loss"]] == list(range(1, 19))
    losses = [r["loss"] for r in reference if r["split"] == "train"]
    assert [v for _, v in got["train/loss"]] == pytest.approx(losses, rel=1e-6)
    assert [s for s, _ in got["val/accuracy"]] == [6, 12, 18]


@pytest.mark.slow
def test_tensorboard_off_and_a_broken_sink_never_stop_training(
    uninterrupted: Path, tmp_path: Path
) -> None:
    reference = without_timings(records(uninterrupted / "logs" / "metrics.jsonl"))
    off = train(write_config(tmp_path, "off", experiment_name="off", tensorboard=False),
                tmp_path / "experiments")  # fmt: skip
    assert off.returncode == 0, off.stderr
    assert not (tmp_path / "experiments" / "off" / "tensorboard").exists()
    assert without_timings(records(tmp_path / "experiments/off/logs/metrics.jsonl")) == reference

    # A file where the event folder should be: the sink fails at its start.
    broken = tmp_path / "experiments" / "tiny"
    broken.mkdir(parents=True)
    (broken / "tensorboard").write_text("in the way")
    proc = train(write_config(tmp_path, tensorboard=True), tmp_path / "experiments")
    assert proc.returncode == 0, proc.stderr
    log = (broken / "logs" / "train.log").read_text()
    assert log.count("tensorboard sink failed") == 1, log
    assert without_timings(records(broken / "logs" / "metrics.jsonl")) == reference
