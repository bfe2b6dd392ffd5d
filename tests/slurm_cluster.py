"""A throw-away one-node Slurm cluster on localhost, for tests that submit real jobs.

slurmctld and slurmd (Debian's slurm-wlm) run from a temp folder with their own
``slurm.conf``, free ports and ``auth/none`` (no munge daemon needed), and are shut down
afterwards. Every client call gets ``SLURM_CONF`` pointing at that file, so nothing of
the machine's own Slurm set-up (if any) is touched.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel", "srun")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; jobs run as the current user."""

    def __init__(self, folder: Path, nodes: int = 1) -> None:
        self.folder = folder
        self.nodes = nodes
        self.node = "metasuite-node"
        self.node_names = [self.node] if nodes == 1 else [f"n{i}" for i in range(1, nodes + 1)]
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for key in list(self.env):
            # A test run inside a real Slurm job must not leak that job's settings.
            if key.startswith(("SLURM_", "SBATCH_")) and key != "SLURM_CONF":
                del self.env[key]
        self.procs: list[subprocess.Popen] = []

    def _write_conf(self) -> None:
        f = self.folder
        for sub in ("state", "spool", "log"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        user = getpass.getuser()
        cpus = os.cpu_count() or 1
        self.conf.write_text(
            f"""ClusterName=metasuite{os.getpid()}
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/none
CredType=cred/none
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={f}/state
SlurmdSpoolDir={f}/spool{"-%n" if self.nodes > 1 else ""}
SlurmctldPidFile={f}/slurmctld.pid
SlurmdPidFile={f}/slurmd{"-%n" if self.nodes > 1 else ""}.pid
SlurmctldLogFile={f}/log/slurmctld.log
SlurmdLogFile={f}/log/slurmd{"-%n" if self.nodes > 1 else ""}.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
InactiveLimit=0
MinJobAge=600
KillWait=5
{self._node_lines(cpus)}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _node_lines(self, cpus: int) -> str:
        """One node, or several slurmd on this host (Debian's build runs them: each its
        own name, ``slurmd -N``, and port), sharing the CPUs."""
        host = socket.gethostname()
        if self.nodes == 1:
            return (
                f"NodeName={self.node} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} "
                "State=UNKNOWN"
            )
        each = max(1, cpus // self.nodes)
        return "\n".join(
            f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} "
            f"CPUs={each} State=UNKNOWN"
            for name in self.node_names
        )

    def start(self, timeout: float = 60) -> None:
        self._write_conf()
        log = open(self.folder / "log" / "daemons.out", "ab")  # noqa: SIM115 (lives with procs)
        # -D: stay in the foreground, so the processes are ours to stop; -i: ignore state.
        self.procs.append(
            subprocess.Popen(["slurmctld", "-D", "-i"], env=self.env, stdout=log, stderr=log)
        )
        for name in self.node_names:
            self.procs.append(
                subprocess.Popen(["slurmd", "-D", "-N", name], env=self.env, stdout=log, stderr=log)
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Slurm daemon exited at start: {self.logs()}")
            out = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.split()
            if out == ["idle"] * self.nodes:
                return
            time.sleep(0.5)
        raise RuntimeError(f"local Slurm did not become idle within {timeout} s: {self.logs()}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        parts = []
        slurmd = ["slurmd.log"] if self.nodes == 1 else [f"slurmd-{n}.log" for n in self.node_names]
        for name in ("daemons.out", "slurmctld.log", *slurmd):
            path = self.folder / "log" / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def run(self, *args: str, check: bool = True, cwd: Path | None = None):
        return subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, check=check, cwd=cwd
        )

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait_for(self, job_id: str, predicate, timeout: float = 120, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if predicate(info):
                return info
            time.sleep(0.5)
        raise AssertionError(f"job {job_id}: not {what} within {timeout} s: {info}\n{self.logs()}")

    def start_now(self, job_id: str) -> None:
        """A requeued job waits ~2 minutes before it is eligible again; skip the wait.

        Not quite all of it: slurmd refuses a launch credential issued in the same second
        as the revocation of the previous run ("Job 1 already killed, do not launch"),
        so leave a couple of seconds.
        """
        time.sleep(2.5)
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
