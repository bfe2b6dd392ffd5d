"""``metasuite run-suite``: device pool, skipping done experiments, pauses, failures, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from metasuite.cli import main
from metasuite.suite.pool import Slot, make_slots
from suite_helpers import TINY_NAMES, TINY_SUITE, write_suite

# Stands in for python running `metasuite train`: follows a plan of exit codes per
# experiment and run, writes state.json as the builder would, and flags two experiments
# on one device at the same time. The launcher the script execs first runs for real.
FAKE_TRAIN = """#!{python}
import json, os, signal, socket, sys, time
args = sys.argv[1:]
if args[:2] == ["-m", "metasuite.training.launch"]:
    os.execv(sys.executable, [sys.executable, *args])
assert args[:3] == ["-m", "metasuite", "train"], args
name = json.load(open(args[args.index("--config") + 1]))["experiment_name"]
fake = os.environ["FAKE_DIR"]
folder = os.path.join(os.environ["METASUITE_EXPERIMENTS_ROOT"], name)
os.makedirs(folder, exist_ok=True)
runs_file = os.path.join(folder, "fake_runs")
runs = int(open(runs_file).read()) if os.path.exists(runs_file) else 0
open(runs_file, "w").write(str(runs + 1))
plan = json.load(open(os.path.join(fake, "plan.json"))).get(name, [0])
step = plan[min(runs, len(plan) - 1)]
device = os.environ.get("CUDA_VISIBLE_DEVICES") or "cpu"
busy = os.path.join(fake, "busy_" + device)
if device != "cpu":  # CPU slots share the device; GPUs must not
    try:
        os.close(os.open(busy, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        open(os.path.join(fake, "overlap"), "a").write(name + "\\n")
with open(os.path.join(fake, "calls"), "a") as f:
    threads = os.environ.get("METASUITE_NUM_THREADS", "-")
    f.write(" ".join([name, device, threads, *args[5:]]) + "\\n")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(a[0]))
if step == "wait":
    open(os.path.join(fake, "started_" + name), "w").close()
    deadline = time.monotonic() + 60  # never hang a test run: give up after a minute
    while not stop and time.monotonic() < deadline:
        time.sleep(0.02)
    code = 4 if stop else 1
    if stop:
        open(os.path.join(fake, "got_term_" + name), "w").close()
else:
    time.sleep(0.2)
    code = 3 if step == "stuck" else step
if device != "cpu":
    os.remove(busy)
state_path = os.path.join(folder, "state.json")
old = json.load(open(state_path)) if os.path.exists(state_path) else {{"epoch": 0}}
status = {{0: "done", 3: "paused", 4: "interrupted"}}.get(code, "failed")
epoch = old["epoch"] if step == "stuck" else old["epoch"] + 1
state = {{"status": status, "epoch": epoch, "pid": os.getpid(), "host": socket.gethostname()}}
open(state_path, "w").write(json.dumps(state))
if code == 1:
    print("Traceback ...\\nRuntimeError: boom in " + name, file=sys.stderr)
sys.exit(code)
"""


def test_make_slots():
    assert make_slots(["cpu"]) == [Slot(("cpu",))]
    assert make_slots(["cpu"], jobs=2) == [Slot(("cpu",)), Slot(("cpu",))]
    assert make_slots(["0", "1", "2", "3"]) == [Slot((g,)) for g in "0123"]
    assert make_slots(["0", "1", "2", "3"], per_experiment=2) == [
        Slot(("0", "1")),
        Slot(("2", "3")),
    ]
    for gpus, per, jobs, message in [
        (["0", "1", "2"], 2, 1, "does not divide the 3 GPUs"),
        (["0", "0"], 1, 1, "listed twice"),
        (["0", "x"], 1, 1, "expected GPU ids"),
        # The script refuses these; each experiment would fail with exit 2 instead.
        (["01"], 1, 1, "expected GPU ids"),
        (["1000"], 1, 1, "expected GPU ids"),
        (["\u00b2"], 1, 1, "expected GPU ids"),  # str.isdigit() is true for '²'
        (["cpu", "0"], 1, 1, "expected GPU ids"),
        (["cpu"], 2, 1, "on the CPU use --jobs"),
        (["0"], 1, 2, "--jobs applies to the CPU"),
        (["cpu"], 1, 0, "--jobs must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            make_slots(gpus, per, jobs)


def _run_suite_with_fake_gpus(args: list[str]) -> list[str]:
    """``python -m metasuite ARGS`` in a process whose torch pretends to have 4 GPUs (the
    fake trainer needs none, but run-suite checks the ids up front)."""
    code = (
        "import sys, torch; torch.cuda.is_available = lambda: True; "
        "torch.cuda.device_count = lambda: 4; from metasuite.cli import main; "
        "raise SystemExit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-c", code, *args]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A generated tiny suite, a fake python and an experiments root."""
    suite = write_suite(tmp_path)
    assert main(["generate", "--suite", str(suite)]) == 0
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    python = fake_dir / "python"
    python.write_text(FAKE_TRAIN.format(python=sys.executable))
    python.chmod(0o755)
    monkeypatch.setenv("PYTHON", str(python))
    monkeypatch.setenv("FAKE_DIR", str(fake_dir))
    monkeypatch.delenv("METASUITE_EXPERIMENTS_ROOT", raising=False)
    # The fake trainer needs no GPU, but run-suite checks the ids up front: pretend 4.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)

    class Fake:
        root = tmp_path
        dir = fake_dir
        experiments = tmp_path / "experiments"
        suite_path = suite

        def plan(self, **codes):
            (fake_dir / "plan.json").write_text(json.dumps(codes))

        def runs(self, name):
            path = self.experiments / name / "fake_runs"
            return int(path.read_text()) if path.exists() else 0

        def calls(self):
            path = fake_dir / "calls"
            return path.read_text().splitlines() if path.exists() else []

        def args(self, *extra):
            base = ["run-suite", "--suite", str(suite), "--experiments-root", str(self.experiments)]
            return [*base, *extra]

    return Fake()


def test_pool_runs_everything_one_per_device_past_failures_and_pauses(fake, capsys):
    failing, pausing = "maml++_5way_1shot_s0", "maml_5way_1shot_s1"
    fake.plan(**{failing: [1], pausing: [3, 3, 0]})
    assert main(fake.args("--gpus", "0", "1")) == 1
    out = capsys.readouterr().out
    assert "6 experiments on gpu 0, gpu 1: 5 done, 1 failed" in out
    assert f"failed: {failing} (exit 1): RuntimeError: boom in {failing}" in out
    assert f"{fake.experiments / failing / 'logs' / 'run_suite.log'}" in out
    assert not (fake.dir / "overlap").exists()  # never two experiments on one GPU
    calls = fake.calls()
    assert {c.split()[1] for c in calls} == {"0", "1"}  # both GPUs were used
    assert all(c.endswith("--gpus 0 --quiet") for c in calls)  # each sees its GPU as 0
    assert fake.runs(pausing) == 3  # paused twice, run again each time, then done
    for name in TINY_NAMES:
        state = json.loads((fake.experiments / name / "state.json").read_text())
        assert state["status"] == ("failed" if name == failing else "done")

    # Started again: finished experiments are skipped, the failed one is retried.
    fake.plan()
    assert main(fake.args("--gpus", "0", "1")) == 0
    assert "6 experiments on gpu 0, gpu 1: 1 done, 5 skipped" in capsys.readouterr().out
    assert [fake.runs(n) for n in TINY_NAMES] == [1, 3, 2, 1, 1, 1]


def test_cpu_jobs_and_only(fake, capsys):
    fake.plan()
    assert main(fake.args("--only", "*20way*", "--quiet")) == 0
    assert "2 experiments on cpu: 2 done" in capsys.readouterr().out
    assert sorted(c.split()[0] for c in fake.calls()) == TINY_NAMES[4:]
    assert all(c.split()[1:] == ["cpu", "-", "--gpus", "cpu", "--quiet"] for c in fake.calls())
    assert main(fake.args("--jobs", "2", "--quiet")) == 0
    assert "6 experiments on cpu, cpu: 4 done, 2 skipped" in capsys.readouterr().out
    # Two experiments at once share out the cores.
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert [c.split()[2] for c in fake.calls()[2:]] == [threads] * 4


def test_pause_without_progress_is_a_failure_not_a_loop(fake, capsys):
    fake.plan(**{TINY_NAMES[0]: ["stuck"]})
    assert main(fake.args("--only", TINY_NAMES[0])) == 1
    assert "paused without finishing an epoch" in capsys.readouterr().out
    assert fake.runs(TINY_NAMES[0]) == 1


def test_stale_generated_files_are_refused(fake, capsys):
    script = fake.root / "experiment_scripts" / f"{TINY_NAMES[0]}.sh"
    script.write_text(script.read_text() + "# edited\n")
    assert main(fake.args()) == 2
    err = capsys.readouterr().err
    assert "1 generated files are stale or missing" in err and "metasuite generate" in err
    assert fake.calls() == []


def test_sigterm_is_forwarded_and_a_restart_picks_up(fake):
    """Kill run-suite: running experiments get SIGTERM, nothing new starts; rerun finishes."""
    fake.plan(**{n: ["wait", 0] for n in TINY_NAMES})
    proc = subprocess.Popen(
        _run_suite_with_fake_gpus(fake.args("--gpus", "0", "1", "--quiet")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(list(fake.dir.glob("started_*"))) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    started = sorted(p.name.removeprefix("started_") for p in fake.dir.glob("started_*"))
    assert started == sorted(TINY_NAMES[:2])
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert sorted(p.name.removeprefix("got_term_") for p in fake.dir.glob("got_term_*")) == started
    assert "6 experiments on gpu 0, gpu 1: 6 stopped" in out
    assert "run the same command again to resume" in err
    assert [fake.runs(n) for n in TINY_NAMES] == [1, 1, 0, 0, 0, 0]

    fake.plan()  # from now on every run finishes
    assert main(fake.args("--gpus", "0", "1", "--quiet")) == 0
    assert [fake.runs(n) for n in TINY_NAMES] == [2, 2, 1, 1, 1, 1]
    for name in TINY_NAMES[:2]:  # the interrupted ones ran again (and would resume)
        assert json.loads((fake.experiments / name / "state.json").read_text())["epoch"] == 2


@pytest.mark.slow
def test_run_suite_trains_three_real_experiments_one_failing(tmp_path, capsys, monkeypatch):
    """Real Omniglot on the CPU; the experiment with a missing data set fails, others finish.

    The good ones pause after each epoch (total_epochs_before_pause = 1, exit 3), so the
    pool must run each of them twice.
    """
    suite_text = (
        TINY_SUITE.replace('dataset_path = "omniglot_dataset"\n', "pause = 1\n")
        .replace("iters = 3", "iters = 1")
        .replace(
            "way = [5, 20]",
            'way = [5]\ndata = { data = ["ok", "bad"], '
            'dataset_path = ["omniglot_dataset", "/nonexistent_metasuite/no_such_dataset"] }',
        )
        .replace('[[exclude]]\nmethod = "maml"\nway = 20', '[[exclude]]\nmethod = "maml++"')
        .replace("seed = [0, 1]", 'seed = [0, 1]\n\n[[exclude]]\ndata = "bad"\nseed = 1')
        .replace("shot }}shot", "shot }}shot_{{ data }}")
    )
    suite = write_suite(tmp_path, suite_text)
    assert main(["generate", "--suite", str(suite)]) == 0
    monkeypatch.delenv("PYTHON", raising=False)
    experiments = tmp_path / "experiments"
    args = ["run-suite", "--suite", str(suite), "--experiments-root", str(experiments), "--quiet"]
    capsys.readouterr()

    assert main(args) == 1
    out = capsys.readouterr().out
    done = ["maml_5way_1shot_ok_s0", "maml_5way_1shot_ok_s1"]
    failed = "maml_5way_1shot_bad_s0"
    assert "3 experiments on cpu: 2 done, 1 failed" in out
    assert f"failed: {failed} (exit 2): " in out and "no_such_dataset" in out
    for name in done:
        state = json.loads((experiments / name / "state.json").read_text())
        assert state["status"] == "done" and (state["epoch"], state["iteration"]) == (2, 2)
        assert (experiments / name / "test_summary.json").exists()
        log = (experiments / name / "logs" / "run_suite.log").read_text()
        assert log.count("=== run-suite") == 2  # paused after epoch 1, run again to the end

    assert main(args) == 1  # run again: the done ones are skipped, the failed one retried
    assert "3 experiments on cpu: 2 skipped, 1 failed" in capsys.readouterr().out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_experiments_get_sigterm_when_run_suite_is_killed_outright(fake):
    """SIGKILL leaves run-suite no chance to forward; the kernel sends SIGTERM instead."""
    fake.plan(**{n: ["wait"] for n in TINY_NAMES})
    proc = subprocess.Popen(
        _run_suite_with_fake_gpus(fake.args("--gpus", "0", "--quiet")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not list(fake.dir.glob("started_*")) and time.monotonic() < deadline:
        assert proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=30)
    got_term = fake.dir / f"got_term_{TINY_NAMES[0]}"
    deadline = time.monotonic() + 30
    while not got_term.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got_term.exists()
    state = json.loads((fake.experiments / TINY_NAMES[0] / "state.json").read_text())
    assert state["status"] == "interrupted"


@pytest.mark.parametrize(("cuda", "count", "words"), [(False, 0, "CUDA is not available"),
                                                      (True, 1, "there is no GPU 3")])  # fmt: skip
def test_gpus_that_do_not_exist_are_refused_once_up_front(
    fake, capsys, monkeypatch, cuda, count, words
):
    """`run-suite --gpus 0 3` without those GPUs: one line, exit 2, no experiment started
    (each used to start, fail with the same error and leave a half-made folder)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert main(fake.args("--gpus", "0", "3")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("metasuite run-suite: error: --gpus 0 3: ") and words in line
    assert fake.calls() == [] and not fake.experiments.exists()


def test_a_second_run_suite_on_the_same_suite_is_refused_up_front(fake, capsys):
    """Issue 29: two run-suite at once both exited 1, each reporting a failure that did
    not happen (the other's training output as the reason). The second is refused with
    one line before it starts anything; once the first is gone (even killed), it runs."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from metasuite.suite.pool import one_runner\n"
            "with one_runner(Path(sys.argv[1]), Path(sys.argv[2])):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(120)\n"
        ), str(fake.experiments), str(fake.suite_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        fake.plan()
        assert main(fake.args("--gpus", "0")) == 2
        err = capsys.readouterr().err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"metasuite run-suite: error: another run-suite (pid {holder.pid} ")
        assert f"is running {fake.suite_path}" in line
        assert fake.calls() == [] and not any((fake.experiments / n).exists() for n in TINY_NAMES)
    finally:
        holder.kill()
        holder.wait()
    assert main(fake.args("--gpus", "0")) == 0  # the killed holder's lock is taken over
    assert "6 experiments on gpu 0: 6 done" in capsys.readouterr().out


def test_pool_takes_jobs_from_a_source_watches_them_and_reports_pruned(fake):
    """What ``metasuite tune`` needs of the pool: jobs asked for one at a time as slots
    free up, a tick with the running names, and exit 5 (ended on request) as "pruned"."""
    from metasuite.suite.files import job_environment
    from metasuite.suite.pool import Job, Pool

    names = TINY_NAMES[:3]
    fake.plan(**{names[1]: [5]})
    queue = [Job(n, fake.root / "experiment_scripts" / f"{n}.sh") for n in names]
    asked: list[int] = []

    def more() -> Job | None:
        asked.append(len(queue))
        return queue.pop(0) if queue else None

    ticks: list[list[str]] = []
    pool = Pool(
        [],
        make_slots(["cpu"], jobs=2),
        fake.experiments,
        env=job_environment(fake.experiments),
        report=lambda line: None,
        more_jobs=more,
        on_tick=lambda running: ticks.append(list(running)),
    )
    results = pool.run()
    assert [(r.name, r.status) for r in results] == [
        (names[0], "done"),
        (names[1], "pruned"),
        (names[2], "done"),
    ]
    assert asked == [3, 2, 1, 0]  # asked again only when a slot was free; once told "no more"
    assert ticks and all(0 < len(t) <= 2 for t in ticks)
    assert {n for t in ticks for n in t} == set(names)
