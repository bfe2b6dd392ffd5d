"""The launcher every generated script ``exec``s: device words → ``metasuite train``,
and a Slurm job's signal → checkpoint → requeue loop.

The generated files are a few lines each, so that a change of how experiments start is
one edit here instead of 72 regenerated files (as submitit and Lightning keep this logic
in Python rather than in generated shell):

``python -m metasuite.training.launch --config FILE --name X.sh -- [DEVICE ...] [-- ARG ...]``
    What ``experiment_scripts/X.sh`` runs. No device, or ``cpu``: the CPU, with every GPU
    hidden; one GPU id: that GPU, which the process sees as its device 0; several: one
    data-parallel process each (``metasuite train`` starts them under torchrun). Words
    after a second ``--`` go to ``metasuite train``. Device mistakes (the grammar of
    :mod:`metasuite.training.devices`) and a missing config are one line naming the
    script, exit 2, and nothing is started. Otherwise the launcher ``exec``s
    ``$PYTHON -m metasuite train``, as the script did before (``$PYTHON`` may be a wrapper;
    unset, this launcher's own interpreter, i.e. the script's ``python3``), so the pid is
    the trainer's and signals sent to it reach the trainer; the exit status is
    train's (:class:`metasuite.errors.ExitCode`).

``python -m metasuite.training.launch --slurm-job --script REL [--gpus-from-slurm]``
``[--nodes N] [--no-requeue | --max-requeues N]``
    What ``experiment_scripts/slurm/X.sbatch`` runs. Runs ``bash <submit dir>/REL`` with
    the GPUs Slurm granted (``$CUDA_VISIBLE_DEVICES``) or ``cpu`` as a child, forwards
    USR1 (the time-limit warning) and TERM to it as SIGTERM, and on a resumable exit
    (:data:`metasuite.errors.RESUMABLE_EXIT_CODES`) requeues the job with ``scontrol``,
    unless the stop came from SIGTERM (scancel), requeue is off, or ``max_requeues`` is
    used up. With ``--nodes N`` (N > 1) the script runs under ``srun``, once per node
    (:func:`srun_prefix`). Log lines go to stderr, prefixed ``[metasuite-slurm job ID]``.

Only the standard library and base modules are imported, so nothing heavy (torch) loads
before ``metasuite train`` does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

from metasuite.errors import RESUMABLE_EXIT_CODES, ExitCode
from metasuite.training.devices import CPU, GIVEN_ENV, DeviceSpecError, parse_devices

SEPARATOR = "--"
NO_GPU = ("", "NoDevFiles")
"""``$CUDA_VISIBLE_DEVICES`` values that mean Slurm granted no GPU."""


# ------------------------------------------------------------------ experiment script


def cuda_visible_and_gpus(devices: Sequence[str]) -> tuple[str, str]:
    """``$CUDA_VISIBLE_DEVICES`` and ``train --gpus`` for parsed device words.

    The CPU hides every GPU so that nothing lands on one by accident; GPUs are made the
    only visible ones and renumbered 0..n-1, as the process sees them.
    """
    if tuple(devices) == (CPU,):
        return "", CPU
    return ",".join(devices), ",".join(str(i) for i in range(len(devices)))


def train_command(python: str, config: str, gpus: str, train_args: Sequence[str]) -> list[str]:
    return [python, "-m", "metasuite", "train", "--config", config, "--gpus", gpus, *train_args]


def experiment_script(config: str, name: str, words: Sequence[str]) -> int:
    """``X.sh [DEVICE ...] [-- ARG ...]``: returns only on a mistake (exit status)."""
    words = list(words)
    if SEPARATOR in words:
        cut = words.index(SEPARATOR)
        device_words, train_args = words[:cut], words[cut + 1 :]
    else:
        device_words, train_args = words, []
    try:
        devices = parse_devices(device_words)
    except DeviceSpecError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return ExitCode.USER_ERROR
    # Normalised like the shell's `cd dir/.. && pwd`: logical, symlinks kept.
    config = os.path.normpath(config)
    if not os.path.isfile(config):
        print(f"{name}: config {config} is missing; run: metasuite generate", file=sys.stderr)
        return ExitCode.USER_ERROR
    visible, gpus = cuda_visible_and_gpus(devices)
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    os.environ[GIVEN_ENV] = f"{name} {' '.join(devices)}"
    python = os.environ.get("PYTHON") or sys.executable
    command = train_command(python, config, gpus, train_args)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(python, command)
    except OSError as exc:
        print(f"{name}: cannot run {python} ($PYTHON): {exc.strerror}", file=sys.stderr)
        return ExitCode.USER_ERROR
    raise AssertionError("unreachable: exec returned")  # pragma: no cover


# ---------------------------------------------------------------------------- Slurm


class _Forwarder:
    """Signal handler of the batch process: remember the signal, ask the child to
    checkpoint and stop (SIGTERM)."""

    def __init__(self, log) -> None:
        self.log = log
        self.child: subprocess.Popen[bytes] | None = None
        self.signalled: str | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.signalled = name
        self.log(f"got {name}; asking the experiment to checkpoint and stop")
        self.terminate_child()

    def terminate_child(self) -> None:
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signal.SIGTERM)


def _requeue(job: str, log) -> bool:
    try:
        return subprocess.run(["scontrol", "requeue", job]).returncode == 0
    except OSError as exc:
        log(f"scontrol: {exc.strerror}")
        return False


def srun_prefix(nodes: int) -> list[str]:
    """One task per node of the allocation, each with the whole node's CPUs and GPUs."""
    return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1"]


def slurm_job(
    script_rel: str,
    *,
    gpus_from_slurm: bool,
    requeue: bool,
    max_requeues: int,
    nodes: int = 1,
    environ: Mapping[str, str] = os.environ,
) -> int:
    """One run of a Slurm job: the experiment script, then done, requeued or failed.

    ``nodes > 1``: the script runs once per node under ``srun`` (one task each, so each
    is a ``metasuite train`` launcher that reads its node from Slurm's environment); srun
    passes the forwarded SIGTERM on to every task, and returns the highest exit status
    of them, which is the job's status on every node (they agree on it)."""
    job = environ.get("SLURM_JOB_ID") or "none"
    restarts = int(environ.get("SLURM_RESTART_COUNT") or 0)

    def log(message: str) -> None:
        print(f"[metasuite-slurm job {job}] {message}", file=sys.stderr, flush=True)

    # Slurm runs a copy of the sbatch file from its spool folder, so paths start at the
    # folder the job was submitted from (metasuite submit submits from the suite's root).
    root = environ.get("SLURM_SUBMIT_DIR") or environ.get("PWD") or os.getcwd()
    script = f"{root}/{script_rel}"
    if not os.path.isfile(script):
        log(f"{script} not found: submit from the suite's root folder (metasuite submit does)")
        return ExitCode.USER_ERROR
    if gpus_from_slurm:
        # Slurm sets CUDA_VISIBLE_DEVICES to the GPUs of this job; they become the ids.
        visible = environ.get("CUDA_VISIBLE_DEVICES", "")
        if visible in NO_GPU:
            log("Slurm granted no GPU (CUDA_VISIBLE_DEVICES is empty); check the gres setting")
            return ExitCode.USER_ERROR
        devices = visible.split(",")
    else:
        devices = [CPU]

    forward = _Forwarder(log)
    previous = {s: signal.signal(s, forward) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        command = ["bash", script, *devices]
        if nodes > 1:
            command = [*srun_prefix(nodes), *command]
        log(f"run {restarts + 1} on {socket.gethostname()}: {' '.join(command)}")
        forward.child = subprocess.Popen(command)
        if forward.signalled is not None:  # arrived while the child was being started
            forward.terminate_child()
        # A handled signal interrupts the wait, which Python then resumes (PEP 475).
        code = forward.child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    status = 128 - code if code < 0 else code  # killed by a signal: the shell's status

    if status == ExitCode.DONE:
        log("experiment finished")
        return ExitCode.DONE
    if status not in RESUMABLE_EXIT_CODES:
        log(f"experiment failed with exit status {status}")
        return status
    paused, stopped = int(ExitCode.PAUSED), int(ExitCode.STOPPED)
    why = f"exit {status} ({paused} paused, {stopped} checkpointed on a signal)"
    if not requeue:
        log(f"{why}: requeue is off, resubmit to resume")
    elif forward.signalled == "SIGTERM":
        log("stopped by SIGTERM (scancel or preemption): not requeueing")
    elif job == "none":
        log(f"exit {status} and not inside a Slurm job: run the script again to resume")
    elif restarts >= max_requeues:
        log(
            f"exit {status} after {restarts} restarts (max_requeues = {max_requeues}): "
            "not requeueing"
        )
    elif _requeue(job, log):
        log(f"{why}: requeued")
        return ExitCode.DONE
    else:
        log(f"exit {status} but 'scontrol requeue {job}' failed; resubmit to resume")
    return status


# ------------------------------------------------------------------------ entry point

USAGE = (
    "usage: python -m metasuite.training.launch --config FILE --name NAME -- "
    "[DEVICE ...] [-- TRAIN_ARG ...]\n"
    "       python -m metasuite.training.launch --slurm-job --script REL "
    "[--gpus-from-slurm] [--nodes N] [--no-requeue | --max-requeues N]\n"
    "(what the scripts generated by `metasuite generate` run; see their header)"
)


def _options(words: Sequence[str]) -> dict[str, str | bool]:
    """The launcher's own options (what the generated files write), strictly."""
    flags = {"--slurm-job", "--gpus-from-slurm", "--no-requeue"}
    valued = {"--config", "--name", "--script", "--max-requeues", "--nodes"}
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word in flags:
            out[word] = True
        elif word in valued and i + 1 < len(words):
            out[word] = words[i + 1]
            i += 1
        else:
            raise ValueError(word)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if SEPARATOR in argv:
        cut = argv.index(SEPARATOR)
        own, rest = argv[:cut], argv[cut + 1 :]
    else:
        own, rest = argv, []
    try:
        opts = _options(own)
        if opts.get("--slurm-job"):
            if rest or "--script" not in opts:
                raise ValueError("--script")
            requeue = not opts.get("--no-requeue")
            if requeue == ("--max-requeues" not in opts):
                raise ValueError("--max-requeues (give it, or --no-requeue)")
            return slurm_job(
                str(opts["--script"]),
                gpus_from_slurm=bool(opts.get("--gpus-from-slurm")),
                requeue=requeue,
                max_requeues=int(opts.get("--max-requeues", 0)),
                nodes=int(opts.get("--nodes", 1)),
            )
        if "--config" not in opts:
            raise ValueError("--config")
        name = str(opts.get("--name") or "metasuite.training.launch")
        return experiment_script(str(opts["--config"]), name, rest)
    except ValueError as exc:
        print(f"metasuite.training.launch: bad arguments near {exc}\n{USAGE}", file=sys.stderr)
        return ExitCode.USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
