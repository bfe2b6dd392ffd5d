"""Each member of a finished experiment's test ensemble, on its own and added one by one.

    python bench/ensemble_members.py EXPERIMENT_FOLDER [--gpus cpu] [--out FILE.json] [--quiet]

The builder's test reports two figures: the ensemble of the top ``max_models_to_save``
validation epochs and the best single one. When the two are far apart (an ensemble
several points above its best member), a reader has to tell a real effect from a bug in
the ensemble; this script gives what is needed to do that. For every epoch of the
ensemble in ``test_summary.json`` (in its order, best validation first) it loads the
checkpoint file and evaluates it on the same fixed test tasks, through the builder's
own :meth:`~metasuite.training.builder.Builder.evaluate_checkpoint` (what its test
scores each member with), and reports:

- the member's own test accuracy (mean and 95% CI over tasks) and its mean top
  probability (how confident it is);
- the accuracy of the ensemble of the members so far (mean of their probabilities,
  as the builder computes it), so the last row is the builder's ensemble figure;
- against the best member: the fraction of query images on which the two predict
  different classes, and on which at least one of the two is right.

Nothing in the experiment folder is changed. Writes a JSON (default
``<folder>/logs/ensemble_members.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from metasuite.config import load_config
from metasuite.errors import UserError
from metasuite.fsutil import write_text_atomic
from metasuite.stats import mean_ci95, per_task_accuracy
from metasuite.text import shown_epoch
from metasuite.training.builder import Builder
from metasuite.training.checkpoint import CheckpointStore, CorruptCheckpointError
from metasuite.training.experiment_dir import ExperimentDir
from metasuite.training.runtime import configure, resolve_devices


def _ensemble_epochs(exp: ExperimentDir) -> list[int]:
    summary = exp.read_test_summary()
    if summary is None:
        raise UserError(
            f"{exp.test_summary_path}: missing or not JSON; the experiment has not been "
            "tested (train it to the end first)"
        )
    try:
        epochs = [int(e) for e in summary["ensemble"]["epochs"]]
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"{exp.test_summary_path}: expected an 'ensemble' object with a list 'epochs'"
        ) from None
    if not epochs:
        raise UserError(f"{exp.test_summary_path}: the ensemble has no epochs")
    return epochs


def members(folder: Path, *, device: torch.device, quiet: bool) -> dict[str, Any]:
    """Evaluate each ensemble member of the experiment in ``folder`` on the test tasks."""
    from metasuite.data.tasks import FewShotTasks
    from metasuite.learner.learners import build_learner

    exp = ExperimentDir(Path(folder))
    if not exp.config_path.is_file():
        raise UserError(f"{folder}: not an experiment folder (no {exp.config_path.name})")
    config = load_config(exp.config_path)
    epochs = _ensemble_epochs(exp)
    files = CheckpointStore(exp.checkpoints).epoch_files()
    missing = [shown_epoch(e) for e in epochs if e not in files]
    if missing:
        raise UserError(f"{exp.checkpoints}: no checkpoint for ensemble epochs {missing}")
    tasks = FewShotTasks.from_config(config, quiet=quiet)
    builder = Builder(config, build_learner(config, device), tasks, exp, device=device, quiet=quiet)
    rows: list[dict[str, Any]] = []
    summed: torch.Tensor | None = None
    best_prediction: torch.Tensor | None = None
    best_correct: torch.Tensor | None = None
    for epoch in epochs:
        try:
            probs, labels = builder.evaluate_checkpoint(files[epoch].path, epoch)
        except CorruptCheckpointError as exc:
            raise UserError(str(exc)) from None
        summed = probs if summed is None else summed + probs
        prediction = probs.argmax(dim=-1)
        correct = prediction.eq(labels)
        if best_prediction is None or best_correct is None:
            best_prediction, best_correct = prediction, correct
        mean, ci = mean_ci95(per_task_accuracy(probs, labels))
        ensemble_mean, ensemble_ci = mean_ci95(per_task_accuracy(summed / (len(rows) + 1), labels))
        rows.append(
            {
                "epoch": shown_epoch(epoch),
                "accuracy_mean": mean,
                "accuracy_ci95": ci,
                "mean_top_probability": float(probs.max(dim=-1).values.mean()),
                "ensemble_so_far_mean": ensemble_mean,
                "ensemble_so_far_ci95": ensemble_ci,
                "disagreement_with_best": float(prediction.ne(best_prediction).double().mean()),
                "either_right_with_best": float((correct | best_correct).double().mean()),
            }
        )
    return {
        "experiment": config.experiment_name,
        "experiment_folder": str(exp.path),
        "num_tasks": config.num_evaluation_tasks,
        "epochs_numbered_from": 1,
        "members": rows,
    }


def _percent(mean: float, ci: float) -> str:
    return f"{100 * mean:6.2f} ± {100 * ci:4.2f}%"


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['experiment']}: test ensemble members on {result['num_tasks']} tasks",
        "epoch  single            top-prob  ensemble so far   differs from best  either right",
    ]
    for row in result["members"]:
        single = _percent(row["accuracy_mean"], row["accuracy_ci95"])
        so_far = _percent(row["ensemble_so_far_mean"], row["ensemble_so_far_ci95"])
        differs, either = row["disagreement_with_best"], row["either_right_with_best"]
        lines.append(
            f"{row['epoch']:>5}  {single}   {row['mean_top_probability']:.3f}   {so_far}"
            f"   {100 * differs:16.1f}%  {100 * either:10.1f}%"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a finished experiment's folder")
    parser.add_argument("--gpus", default="cpu", help="'cpu' (default) or one GPU id")
    parser.add_argument("--out", type=Path, help="JSON to write (default: in the folder's logs/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        devices = resolve_devices(args.gpus)
        configure(devices[:1])
        result = members(args.folder, device=devices[0], quiet=args.quiet)
        out = args.out or ExperimentDir(args.folder).logs / "ensemble_members.json"
        write_text_atomic(Path(out), json.dumps(result, indent=2) + "\n")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(_table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
