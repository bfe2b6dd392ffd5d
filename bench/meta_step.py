"""Meta-iterations/s, evaluation tasks/s and peak memory of each learner backend.

    python bench/meta_step.py [--ways 5 20] [--backends loop,vmap,grouped] [--reps 5]
                              [--meta-learner maml meta_sgd anil reptile]
                              [--bf16] [--no-memory] [--no-agreement] [--accuracy-iters N]
                              [--group-sizes 1,2,4,8] [--quiet]
    python bench/meta_step.py --backbone conv conv-module resnet12 resnet12-ckpt
                              [--resnet-widths 16,32,64,128]

Setting: real Omniglot (the first training meta-batch and the first validation tasks),
MAML++ as in the reference 1-shot configs: batch 8, 64 filters, 5 inner steps, second
order, MSL at epoch 0, per-step BN, LSLR. Every backend starts from the same
initialisation, and the backends are timed interleaved (one step of each in turn,
``--reps`` times), so load from other processes hits them alike; reported are the
median, and the speed-up of the best runs, the least disturbed on a shared machine.
Also per backend: CPU seconds per meta-iteration, the agreement with the reference
loop on the same batch (relative loss and meta-gradient difference, in float32 as run
and in float64), and the peak resident memory of one training step (measured in a
fresh subprocess).

``--meta-learner`` times each named learner (default: maml) with each backend, all
interleaved. Meta-SGD and ANIL run the MAML++ setting above; Reptile has no second
order, MSL or learned rates (refused for it), so it runs first order with fixed rates:
its meta-iteration is the inner loop alone. Agreement with the loop is reported for the
learners whose step is a backend call (not Reptile's, whose update is its own).

``--group-sizes`` additionally times the grouped backend's meta-gradient alone with
each number of tasks per grouped network (``backends.TASKS_PER_GROUP`` is the
default; 1 is the task-by-task grouped backend), interleaved the same way.

``--accuracy-iters N`` additionally trains a small 5-way 1-shot model for N
meta-iterations in fp32 and in bf16 and reports validation accuracy, the accuracy
effect of ``precision: bf16``.

``--backbone`` times networks instead (5-way 1-shot, MAML++ second order): the reference
conv network on its fast path (grouped) and on the per-task loop, the same network
written as an ``nn.Module`` and run through the generic path (``functional_call``,
per-step BN kept outside; the goal is within 1.5x of the loop's time), a small
ResNet-12, and the ResNet-12 with activation checkpointing (time against memory).

Writes ``bench/results/meta_step-<UTC time>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from tqdm import tqdm

from metasuite.config import REPO_ROOT, ExperimentConfig, from_dict, replace, to_json
from metasuite.data.batch import TaskBatch
from metasuite.data.tasks import FewShotTasks, train_indices
from metasuite.learner.backends import AUTO_BACKEND, BACKENDS, TASKS_PER_GROUP, grouped_backend
from metasuite.learner.learners import LEARNERS, build_learner
from metasuite.learner.reference import train_plan
from metasuite.learner.system import MamlSystem

RESULTS = REPO_ROOT / "bench" / "results"


@dataclass(frozen=True)
class Variant:
    backend: str
    precision: str
    learner: str = "maml"

    @property
    def name(self) -> str:
        name = self.backend if self.precision == "fp32" else f"{self.backend}+{self.precision}"
        return name if self.learner == "maml" else f"{self.learner}:{name}"


# What Reptile cannot take from the MAML++ setting (config.py refuses these for it).
REPTILE_KEYS = {
    "second_order": False,
    "use_multi_step_loss_optimization": False,
    "learnable_per_layer_per_step_inner_loop_learning_rate": False,
    "meta_learning_rate": 1.0,
}


def bench_config(ways: int, precision: str = "fp32", learner: str = "maml") -> ExperimentConfig:
    """The reference Omniglot MAML++ 1-shot setting with ``ways`` classes, for ``learner``."""
    cfg = replace(ExperimentConfig(), num_classes_per_set=ways, precision=precision)
    extra = REPTILE_KEYS if learner == "reptile" else {}
    return replace(cfg, meta_learner=learner, **extra)


def _batches(cfg: ExperimentConfig, eval_tasks: int) -> tuple[TaskBatch, TaskBatch]:
    tasks = FewShotTasks.from_config(cfg, quiet=True)
    return tasks.train.batch(train_indices(0, cfg.batch_size)), tasks.val.batch(range(eval_tasks))


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten().double() for g in grads])


def agreement(
    cfg: ExperimentConfig, variant: Variant, batch: TaskBatch, dtype: torch.dtype
) -> dict[str, float]:
    """Relative loss and meta-gradient difference from the loop on one batch, in ``dtype``.

    In float32 the real images' blank regions make exact ties in max-pool windows, and
    which tied element receives the gradient depends on the last bit of each conv
    output, which differs between conv algorithms; in float64 the same computation
    shows whether the math is the same.
    """
    system = build_learner(cfg)
    params = {k: v.detach().to(dtype).requires_grad_() for k, v in system.params.items()}
    rates = {k: v.detach().to(dtype).requires_grad_() for k, v in system.rates.items()}
    meta = list(params.values()) + list(rates.values())
    images = TaskBatch(
        batch.support_x.to(dtype),
        batch.support_y,
        batch.query_x.to(dtype),
        batch.query_y,
        batch.task_ids,
    )
    out = {}
    for key, v in (("ref", Variant("loop", "fp32")), ("got", variant)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v.precision == "bf16"):
            out[key] = BACKENDS[v.backend](
                system.net,
                params,
                rates,
                system.inner_names,
                images,
                train_plan(cfg, 0),
                [],
                meta,
            )
    ref, got = out["ref"], out["got"]
    g_ref, g_got = _flat(ref.grads), _flat(got.grads)
    return {
        "loss_rel_diff": abs(float(got.loss_sum - ref.loss_sum)) / abs(float(ref.loss_sum)),
        "grad_rel_diff": float((g_got - g_ref).norm() / g_ref.norm()),
    }


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def timings(
    cfg: ExperimentConfig,
    variants: list[Variant],
    train: TaskBatch,
    val: TaskBatch,
    reps: int,
    quiet: bool,
) -> dict[str, dict[str, float]]:
    """Median wall/CPU seconds per meta-iteration and per evaluation batch, interleaved."""
    ways = cfg.num_classes_per_set
    systems = {
        v.name: build_learner(bench_config(ways, v.precision, v.learner), backend=v.backend)
        for v in variants
    }
    return time_systems(systems, train, val, reps, f"{ways}-way", quiet)


def time_systems(
    systems: dict[str, MamlSystem],
    train: TaskBatch,
    val: TaskBatch,
    reps: int,
    desc: str,
    quiet: bool,
) -> dict[str, dict[str, float]]:
    """Median wall/CPU seconds per meta-iteration and per evaluation batch of each
    system, one step of each in turn ``reps`` times (load hits them alike)."""
    for system in systems.values():  # warm-up: thread pools, allocator, kernels
        system.train_step(train, epoch=0)
        system.evaluate(val)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": [], "eval_wall": []} for name in systems
    }
    steps = tqdm(total=reps * len(systems), desc=desc, disable=quiet)
    for _ in range(reps):
        for name, system in systems.items():
            wall, cpu = _timed(lambda s=system: s.train_step(train, epoch=0))
            samples[name]["wall"].append(wall)
            samples[name]["cpu"].append(cpu)
            wall, _ = _timed(lambda s=system: s.evaluate(val))
            samples[name]["eval_wall"].append(wall)
            steps.update()
    steps.close()
    out = {}
    for name, s in samples.items():
        wall = statistics.median(s["wall"])
        out[name] = {
            "meta_iters_per_s": 1.0 / wall,
            "wall_s_per_iter": wall,
            "wall_s_min": min(s["wall"]),
            "wall_s_all": [round(x, 4) for x in s["wall"]],
            "cpu_s_per_iter": statistics.median(s["cpu"]),
            "eval_tasks_per_s": len(val) / statistics.median(s["eval_wall"]),
        }
    return out


def group_size_sweep(
    cfg: ExperimentConfig, train: TaskBatch, sizes: list[int], reps: int, quiet: bool
) -> dict[str, float]:
    """Median wall seconds of the grouped backend's meta-gradient per group size."""
    system = MamlSystem(cfg, backend="grouped")
    plan = train_plan(cfg, epoch=0)
    meta = system.meta_parameters()

    def run(size: int) -> None:
        records: list = []
        grouped_backend(
            system.net, system.params, system.rates, system.inner_names, train, plan,
            records, meta, group_size=size,
        )  # fmt: skip

    for size in sizes:  # warm-up
        run(size)
    samples: dict[int, list[float]] = {size: [] for size in sizes}
    steps = tqdm(total=reps * len(sizes), desc="group sizes", disable=quiet)
    for _ in range(reps):
        for size in sizes:
            samples[size].append(_timed(lambda s=size: run(s))[0])
            steps.update()
    steps.close()
    return {str(size): statistics.median(v) for size, v in samples.items()}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(ways: int, backend: str, precision: str, learner: str) -> None:
    """Subprocess: peak resident memory added by one training step (after a warm-up)."""
    child_memory_of(bench_config(ways, precision, learner), backend)


def child_memory_of(cfg: ExperimentConfig, backend: str) -> None:
    """Subprocess: peak resident memory added by one training step of ``cfg``."""
    train, _ = _batches(cfg, 1)
    system = build_learner(cfg, backend=backend)
    system.train_step(train, epoch=0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to now
    before = _rss_kib("VmRSS")
    system.train_step(train, epoch=0)
    print(json.dumps({"peak_step_mib": (_rss_kib("VmHWM") - before) / 1024}))


def memory(ways: int, variant: Variant) -> float | None:
    cmd = [sys.executable, __file__, "--child-memory", str(ways), variant.backend]
    return _child_peak([*cmd, variant.precision, variant.learner])


def memory_of(cfg: ExperimentConfig, backend: str) -> float | None:
    """Peak resident memory of one training step of ``cfg`` (fresh subprocess)."""
    return _child_peak([sys.executable, __file__, "--child-config", to_json(cfg), backend])


def _child_peak(cmd: list[str]) -> float | None:
    # A fixed mmap threshold stops glibc from keeping freed tensors in the heap, so the
    # resident-set peak follows the live tensors.
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_step_mib"]


def bf16_accuracy(iters: int, quiet: bool) -> dict[str, float]:
    """Validation accuracy of a small first-order 5-way 1-shot model, fp32 vs bf16."""
    out = {}
    for precision in ("fp32", "bf16"):
        cfg = replace(
            ExperimentConfig(),
            precision=precision,
            cnn_num_filters=32,
            number_of_training_steps_per_iter=2,
            number_of_evaluation_steps_per_iter=2,
            second_order=False,
            batch_size=4,
            meta_learning_rate=0.005,
            multi_step_loss_num_epochs=1,
        )
        tasks = FewShotTasks.from_config(cfg, quiet=True)
        system = MamlSystem(cfg)
        for it in tqdm(range(iters), desc=f"accuracy {precision}", disable=quiet):
            system.train_step(tasks.train.batch(train_indices(it, cfg.batch_size)), epoch=0)
        accs = [system.evaluate(tasks.val.batch(range(i, i + 50))).accuracy for i in (0, 50)]
        out[precision] = sum(accs) / len(accs)
    return out


# ---------------------------------------------------------------------------- backbones
# The reference network written as an nn.Module (the tests' copy, tests/backbone_helpers.py)
# runs through the generic path as a user's factory would.
CONV_MODULE = "backbone_helpers:reference_conv"
BACKBONE_SETTING = "Omniglot 5-way 1-shot, batch 8, 5 inner steps, MAML++ second order"


def backbone_variants(spec: str, widths: list[int]) -> list[tuple[str, ExperimentConfig, str]]:
    """(label, config, backend) rows for one ``--backbone`` name."""
    base = replace(ExperimentConfig(), num_classes_per_set=5)
    resnet = {"backbone": "resnet12", "backbone_kwargs": {"widths": widths}}
    if spec == "conv":
        return [("conv fast path (grouped)", base, "grouped"), ("conv loop", base, "loop")]
    if spec == "conv-module":
        module = {"filters": 64, "stages": 4}
        cfg = replace(base, backbone=CONV_MODULE, backbone_kwargs=module)
        return [("conv as nn.Module, generic path", cfg, "loop")]
    if spec == "resnet12":
        return [(f"resnet12 {widths}", replace(base, **resnet), "loop")]
    if spec == "resnet12-ckpt":
        cfg = replace(base, activation_checkpointing=True, **resnet)
        return [(f"resnet12 {widths}, activation checkpointing", cfg, "loop")]
    raise SystemExit(f"--backbone: unknown {spec!r} (conv, conv-module, resnet12, resnet12-ckpt)")


def backbone_report(args: argparse.Namespace) -> dict:
    """Meta-it/s, CPU s/it and peak step memory of each backbone, interleaved."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    widths = [int(w) for w in args.resnet_widths.split(",")]
    rows = [row for spec in args.backbone for row in backbone_variants(spec, widths)]
    cfg = rows[0][1]
    train, val = _batches(cfg, args.eval_tasks)
    systems = {label: build_learner(c, backend=b) for label, c, b in rows}
    times = time_systems(systems, train, val, args.reps, "backbones", args.quiet)
    loop = times.get("conv loop")
    out = []
    for label, c, backend in rows:
        row = {"backbone": label, "backend": backend, **times[label]}
        row["vs_conv_loop"] = loop and row["wall_s_per_iter"] / loop["wall_s_per_iter"]
        row["parameters"] = sum(p.numel() for p in systems[label].params.values())
        row["peak_step_mib"] = None if args.no_memory else memory_of(c, backend)
        out.append(row)
    return {"setting": BACKBONE_SETTING, "resnet_widths": widths, "rows": out}


def _print_backbones(report: dict) -> None:
    head = f"{'backbone':<44} {'it/s':>6} {'time vs loop':>12} {'cpu s/it':>8} {'peak MiB':>8}"
    print(head)
    print("-" * len(head))
    for r in report["rows"]:
        ratio = f"{r['vs_conv_loop']:.2f}x" if r["vs_conv_loop"] else "-"
        peak = f"{r['peak_step_mib']:.0f}" if r["peak_step_mib"] is not None else "-"
        print(
            f"{r['backbone']:<44} {r['meta_iters_per_s']:>6.3f} {ratio:>12} "
            f"{r['cpu_s_per_iter']:>8.2f} {peak:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--eval-tasks", type=int, default=16)
    parser.add_argument("--bf16", action="store_true", help="also time loop and grouped in bf16")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-agreement", action="store_true", help="skip the loop comparison")
    parser.add_argument(
        "--meta-learner",
        nargs="+",
        default=["maml"],
        # The learners with an inner loop, which is what this script times per backend
        # (ProtoNet and the baselines: bench/learner_step_cost.py).
        choices=[name for name, cls in LEARNERS.items() if issubclass(cls, MamlSystem)],
        dest="learners",
    )
    parser.add_argument("--accuracy-iters", type=int, default=0)
    parser.add_argument("--group-sizes", default="", help="e.g. 1,2,4,8 (grouped backend)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--child-memory", nargs=4, metavar=("WAYS", "BACKEND", "PRECISION", "LEARNER")
    )
    parser.add_argument(
        "--backbone",
        nargs="+",
        help="time networks instead: conv (fast path and loop), conv-module (the reference "
        "net as an nn.Module on the generic path), resnet12, resnet12-ckpt",
    )
    parser.add_argument("--resnet-widths", default="16,32,64,128")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads (0: torch's default); on a loaded machine 1 avoids thread "
        "barriers that dominate small kernels",
    )
    parser.add_argument("--child-config", nargs=2, metavar=("CONFIG_JSON", "BACKEND"))
    args = parser.parse_args()
    if args.child_config:
        sys.path.insert(0, str(REPO_ROOT / "tests"))
        child_memory_of(from_dict(json.loads(args.child_config[0])), args.child_config[1])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        ways, backend, precision, learner = args.child_memory
        child_memory(int(ways), backend, precision, learner)
        return

    variants = []
    for learner in args.learners:
        variants += [Variant(b, "fp32", learner) for b in args.backends.split(",")]
        if args.bf16:
            variants += [
                Variant(b, "bf16", learner) for b in ("loop", "grouped") if b in args.backends
            ]
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg(),
        },
        "settings": {
            "reps": args.reps,
            "eval_tasks": args.eval_tasks,
            "auto_backend": AUTO_BACKEND,
            "tasks_per_group": TASKS_PER_GROUP,
            "setting": "Omniglot 1-shot, batch 8, 64 filters, 5 inner steps, MAML++ 2nd order",
            "meta_learners": args.learners,
            "reptile_keys": REPTILE_KEYS,
        },
        "rows": [],
    }
    if args.backbone:
        report["backbones"] = backbone_report(args)
        report["machine"]["load_average_end"] = os.getloadavg()
        path = _write(report)
        _print_backbones(report["backbones"])
        print(f"\nwritten: {path.relative_to(REPO_ROOT)}")
        return
    for ways in args.ways:
        cfg = bench_config(ways)
        train, val = _batches(cfg, args.eval_tasks)
        times = timings(cfg, variants, train, val, args.reps, args.quiet)
        base = times.get(Variant("loop", "fp32").name)
        for v in variants:
            row = {"ways": ways, "meta_learner": v.learner, "backend": v.backend}
            row |= {"precision": v.precision, **times[v.name]}
            row["speedup_vs_loop"] = base and base["wall_s_per_iter"] / row["wall_s_per_iter"]
            row["speedup_vs_loop_best"] = base and base["wall_s_min"] / row["wall_s_min"]
            for tag, dtype in (("fp32", torch.float32), ("fp64", torch.float64)):
                if (tag == "fp64" and v.precision != "fp32") or args.no_agreement:
                    continue
                if v.learner == "reptile":
                    continue
                diffs = agreement(bench_config(ways, learner=v.learner), v, train, dtype)
                row.update({f"{k}_{tag}": x for k, x in diffs.items()})
            row["peak_step_mib"] = None if args.no_memory else memory(ways, v)
            report["rows"].append(row)
        if args.group_sizes:
            sizes = [int(x) for x in args.group_sizes.split(",")]
            sweep = group_size_sweep(cfg, train, sizes, args.reps, args.quiet)
            report.setdefault("group_size_wall_s", {})[str(ways)] = sweep
    if args.accuracy_iters:
        report["bf16_accuracy"] = {
            "iters": args.accuracy_iters,
            "setting": "5-way 1-shot, 32 filters, 2 steps, first order, batch 4, 100 val tasks",
            **bf16_accuracy(args.accuracy_iters, args.quiet),
        }
    report["machine"]["load_average_end"] = os.getloadavg()
    path = _write(report)
    _print_table(report)
    print(f"\nwritten: {path.relative_to(REPO_ROOT)}")


def _write(report: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"meta_step-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def _print_table(report: dict) -> None:
    head = (
        f"{'ways':>4} {'backend':<22} {'it/s':>6} {'speed-up':>8} {'(best)':>6} {'cpu s/it':>8} "
        f"{'eval tasks/s':>12} {'peak MiB':>8} {'grad rel fp32':>13} {'grad rel fp64':>13}"
    )
    print(head)
    print("-" * len(head))
    for r in report["rows"]:
        name = Variant(r["backend"], r["precision"], r.get("meta_learner", "maml")).name
        speed = f"{r['speedup_vs_loop']:.2f}x" if r["speedup_vs_loop"] else "-"
        best = f"{r['speedup_vs_loop_best']:.2f}x" if r["speedup_vs_loop_best"] else "-"
        peak = f"{r['peak_step_mib']:.0f}" if r["peak_step_mib"] is not None else "-"
        fp64 = f"{r['grad_rel_diff_fp64']:.1e}" if "grad_rel_diff_fp64" in r else "-"
        fp32 = f"{r['grad_rel_diff_fp32']:.1e}" if "grad_rel_diff_fp32" in r else "-"
        print(
            f"{r['ways']:>4} {name:<22} {r['meta_iters_per_s']:>6.3f} {speed:>8} {best:>6} "
            f"{r['cpu_s_per_iter']:>8.2f} {r['eval_tasks_per_s']:>12.1f} {peak:>8} "
            f"{fp32:>13} {fp64:>13}"
        )
    if "bf16_accuracy" in report:
        acc = report["bf16_accuracy"]
        print(
            f"\nbf16 accuracy effect ({acc['setting']}, {acc['iters']} iterations): "
            f"fp32 {acc['fp32']:.3f}, bf16 {acc['bf16']:.3f}"
        )
    for ways, sweep in report.get("group_size_wall_s", {}).items():
        cells = ", ".join(f"{size}: {wall:.3f} s" for size, wall in sweep.items())
        print(f"\n{ways}-way grouped backend, wall s per meta-gradient by tasks per group: {cells}")
    load = report["machine"]
    print(f"load average start {load['load_average_start']}, end {load['load_average_end']}")


if __name__ == "__main__":
    main()
