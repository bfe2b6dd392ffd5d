"""Where the nodes of a multi-node job meet: ``--nnodes/--node-rank/--rdzv-endpoint``, or
Slurm's environment inside an allocation, turned into torchrun's c10d rendezvous options.

One ``metasuite train`` launcher runs per node; each starts torchrun with the same
``--nnodes``, ``--rdzv-backend c10d`` and ``--rdzv-endpoint HOST:PORT``; the launcher of
node rank 0 hosts the rendezvous store on HOST:PORT (torchrun's ``is_host``), the others
connect to it. torchrun ignores ``--node-rank`` for the c10d backend (it numbers the
nodes itself, in the order of their descriptors), so here the node rank only says which
launcher hosts the store: which node then holds global rank 0, the writer, does not
change what is computed (tasks go by rank slot; every rank holds the same learner).

Inside a Slurm step (``srun``, one task per node) nothing needs to be given: the number
of nodes is ``$SLURM_STEP_NUM_NODES`` (else ``$SLURM_NNODES``), the node rank
``$SLURM_NODEID``, and HOST the first host of ``$SLURM_STEP_NODELIST`` (else
``$SLURM_JOB_NODELIST``), expanded by ``scontrol show hostnames`` where it exists, else
parsed here (``a,b``, ``node[01-04,7]``). PORT there is ``$METASUITE_RDZV_PORT``, else
derived from the job id, so that two jobs sharing a node do not meet on one port;
``$METASUITE_RDZV_HOST`` replaces HOST where node names do not resolve.

Only the standard library and base modules are imported (the launcher runs this before
torch loads).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from metasuite.errors import UserError

RDZV_TIMEOUT_ENV = "METASUITE_RDZV_TIMEOUT_S"
DEFAULT_RDZV_TIMEOUT_S = 300
RDZV_PORT_ENV = "METASUITE_RDZV_PORT"
RDZV_HOST_ENV = "METASUITE_RDZV_HOST"
"""Inside Slurm: the rendezvous host instead of the node list's first host (for node
names that do not resolve, e.g. several slurmd on one machine)."""
DEFAULT_PORT = 29400
"""torchrun's default rendezvous port, for an endpoint given without one."""
SLURM_PORT_BASE = 29500
SLURM_PORT_SPAN = 10000


@dataclass(frozen=True)
class Nodes:
    """This launcher's place among the nodes of one job."""

    count: int
    rank: int
    host: str
    port: int
    source: str = "--nnodes"
    """What said so (the options, or Slurm's environment), for error messages."""

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_host(self) -> bool:
        return self.rank == 0


ONE_NODE = Nodes(count=1, rank=0, host="localhost", port=DEFAULT_PORT, source="default")


def rdzv_timeout_seconds(environ: Mapping[str, str] | None = None) -> int:
    """``$METASUITE_RDZV_TIMEOUT_S``: how long a launcher waits for every node to arrive."""
    env = os.environ if environ is None else environ
    raw = env.get(RDZV_TIMEOUT_ENV, str(DEFAULT_RDZV_TIMEOUT_S))
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"${RDZV_TIMEOUT_ENV}={raw!r}: expected a positive number of seconds")
    return value


def parse_endpoint(text: str, where: str = "--rdzv-endpoint") -> tuple[str, int]:
    """``HOST:PORT`` (``HOST`` alone: port 29400; ``[::1]:PORT`` for IPv6)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\s\[\]]+)(?::(\d+))?", text)
    if not match:
        raise UserError(f"{where} {text!r}: expected HOST:PORT, e.g. node01:29400")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    port = DEFAULT_PORT if port_text is None else int(port_text)
    if not 1 <= port <= 65535:
        raise UserError(f"{where} {text!r}: port must be 1..65535")
    return host, port


_BRACKET = re.compile(r"^([^\[\],]*)\[([^\]]+)\](.*)$")


def expand_hostlist(text: str) -> list[str]:
    """The hosts of a Slurm host list in its simple forms: ``a,b``, ``node[1-3,7]``,
    ``gpu[01-02]-ib`` (zero padding kept), several of those separated by commas.

    Raises ValueError for a form it does not know (nested or several brackets in one
    name); :func:`first_host` then asks ``scontrol``, or says so.
    """
    hosts: list[str] = []
    for part in _split_top_level(text.strip()):
        if not part:
            continue
        match = _BRACKET.match(part)
        if match is None:
            if "[" in part or "]" in part:
                raise ValueError(part)
            hosts.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        if "[" in suffix:
            raise ValueError(part)
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(part)
            width = len(lo)
            for n in range(int(lo), int(hi or lo) + 1):
                hosts.append(f"{prefix}{n:0{width}d}{suffix}")
    return hosts


def _split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets."""
    parts, depth, current = [], 0, []
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: ``scontrol show hostnames`` when it is
    installed (it knows every form), else :func:`expand_hostlist`."""
    scontrol = shutil.which("scontrol")
    if scontrol:
        try:
            done = subprocess.run(
                [scontrol, "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.split():
            return done.stdout.split()[0]
    try:
        hosts = expand_hostlist(nodelist)
    except ValueError:
        hosts = []
    if not hosts:
        raise UserError(
            f"cannot read the first host of the Slurm node list {nodelist!r} (no scontrol); "
            "give --rdzv-endpoint HOST:PORT"
        )
    return hosts[0]


def _slurm_port(environ: Mapping[str, str]) -> int:
    raw = environ.get(RDZV_PORT_ENV)
    if raw:
        try:
            port = int(raw)
        except ValueError:
            port = 0
        if not 1 <= port <= 65535:
            raise UserError(f"${RDZV_PORT_ENV}={raw!r}: expected a port number 1..65535")
        return port
    job = environ.get("SLURM_JOB_ID", "")
    offset = int(job) % SLURM_PORT_SPAN if job.isdigit() else 0
    return SLURM_PORT_BASE + offset


def _int(value: str | int, where: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise UserError(f"{where}={value!r}: expected an integer >= {minimum}")
    return number


def resolve_nodes(
    nnodes: int | None,
    node_rank: int | None,
    endpoint: str | None,
    environ: Mapping[str, str] | None = None,
) -> Nodes:
    """The nodes of this job: the options where given, else Slurm's environment, else
    one node (:data:`ONE_NODE`). Mistakes are one line naming the option or variable."""
    env = os.environ if environ is None else environ
    slurm_nodes = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES")
    if nnodes is None and node_rank is None and endpoint is None:
        if not slurm_nodes:
            return ONE_NODE
        var = "$SLURM_STEP_NUM_NODES" if env.get("SLURM_STEP_NUM_NODES") else "$SLURM_NNODES"
        count = _int(slurm_nodes, var, 1)
        if count == 1:
            return ONE_NODE
        if "SLURM_NODEID" not in env:
            raise UserError(f"{var}={count} but $SLURM_NODEID is not set; run under srun")
        rank = _int(env["SLURM_NODEID"], "$SLURM_NODEID", 0)
        host = env.get(RDZV_HOST_ENV)
        if not host:
            nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
            if not nodelist:
                raise UserError(f"{var}={count} but $SLURM_JOB_NODELIST is not set")
            host = first_host(nodelist)
        return Nodes(count, rank, host, _slurm_port(env), source="Slurm")
    count = _int(nnodes if nnodes is not None else 1, "--nnodes", 1)
    rank = _int(node_rank if node_rank is not None else 0, "--node-rank", 0)
    if rank >= count:
        raise UserError(f"--node-rank {rank} with --nnodes {count}: expected 0..{count - 1}")
    if count == 1:
        return ONE_NODE
    if endpoint is None:
        raise UserError(
            f"--nnodes {count} needs --rdzv-endpoint HOST:PORT (where node rank 0 listens)"
        )
    host, port = parse_endpoint(endpoint)
    return Nodes(count, rank, host, port)


def check_host_resolves(nodes: Nodes) -> None:
    """A rendezvous host whose name does not resolve is one line at once, not a wait of
    the whole ``$METASUITE_RDZV_TIMEOUT_S`` for a rendezvous that cannot form."""
    if nodes.count == 1:
        return
    try:
        socket.getaddrinfo(nodes.host, nodes.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError(
            f"the rendezvous host {nodes.host!r} of {nodes.endpoint} (from {nodes.source}) "
            f"does not resolve ({reason}); check --rdzv-endpoint or ${RDZV_HOST_ENV}"
        ) from None


def torchrun_options(nodes: Nodes, run_id: str, timeout_s: int) -> list[str]:
    """torchrun's rendezvous options for one node of ``nodes`` (``--standalone`` for one).

    ``join_timeout`` bounds the wait for the other nodes, ``read_timeout`` the store's
    connection and reads (a wrong host or a port held by something else); ``is_host``
    makes node rank 0, and only it, serve the store, also when every launcher runs on
    one machine.
    """
    if nodes.count == 1:
        return ["--standalone"]
    conf = f"join_timeout={timeout_s},read_timeout={timeout_s}," + (
        f"is_host={'true' if nodes.is_host else 'false'}"
    )
    return [
        f"--nnodes={nodes.count}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={nodes.endpoint}",
        f"--rdzv-id={run_id}",
        f"--rdzv-conf={conf}",
    ]


def run_id(experiment_name: str, environ: Mapping[str, str] | None = None) -> str:
    """The rendezvous id every node of one job computes alike: the experiment (and the
    Slurm job, inside one)."""
    env = os.environ if environ is None else environ
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_name)[:80] or "experiment"
    job = env.get("SLURM_JOB_ID")
    return f"metasuite-{safe}" + (f"-{job}" if job else "")


__all__ = [
    "DEFAULT_RDZV_TIMEOUT_S",
    "ONE_NODE",
    "RDZV_HOST_ENV",
    "RDZV_PORT_ENV",
    "RDZV_TIMEOUT_ENV",
    "Nodes",
    "check_host_resolves",
    "expand_hostlist",
    "first_host",
    "parse_endpoint",
    "rdzv_timeout_seconds",
    "resolve_nodes",
    "run_id",
    "torchrun_options",
]
