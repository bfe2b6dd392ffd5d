"""Where the nodes of a job meet: the options, Slurm's environment, host lists, and the
torchrun rendezvous options built from them (the jobs themselves are in
tests/training/test_multinode_job.py)."""

from __future__ import annotations

import pytest

from metasuite.errors import UserError
from metasuite.training import nodes
from metasuite.training.nodes import Nodes, expand_hostlist, resolve_nodes, torchrun_options


def test_no_options_and_no_slurm_is_one_node() -> None:
    assert resolve_nodes(None, None, None, {}) == nodes.ONE_NODE
    assert resolve_nodes(1, None, None, {}).count == 1


def test_options_give_count_rank_and_endpoint() -> None:
    got = resolve_nodes(2, 1, "127.0.0.1:29611", {})
    assert (got.count, got.rank, got.host, got.port) == (2, 1, "127.0.0.1", 29611)
    assert got.endpoint == "127.0.0.1:29611" and not got.is_host
    assert resolve_nodes(3, None, "node01", {}).port == nodes.DEFAULT_PORT
    assert resolve_nodes(2, 0, "[::1]:5000", {}).endpoint == "[::1]:5000"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 0, None), "--nnodes 2 needs --rdzv-endpoint HOST:PORT"),
        ((2, 2, "h:1"), "--node-rank 2 with --nnodes 2: expected 0..1"),
        ((0, None, None), "--nnodes=0: expected an integer >= 1"),
        ((2, -1, "h:1"), "--node-rank=-1: expected an integer >= 0"),
        ((2, 0, "h:99999"), "port must be 1..65535"),
        ((2, 0, "h:p"), "expected HOST:PORT"),
        ((2, 0, "a:b:c"), "expected HOST:PORT"),
    ],
)
def test_option_mistakes_are_one_line_naming_the_option(args: tuple, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace(".", r"\.")):
        resolve_nodes(*args, {})


SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NNODES": "3",
    "SLURM_NODEID": "2",
    "SLURM_JOB_NODELIST": "gpu[07-09]",
}


def test_slurm_environment_inside_an_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes.shutil, "which", lambda name: None)  # no scontrol: parsed
    got = resolve_nodes(None, None, None, SLURM)
    assert (got.count, got.rank, got.host, got.source) == (3, 2, "gpu07", "Slurm")
    assert got.port == nodes.SLURM_PORT_BASE + 4242  # from the job id: jobs do not collide
    assert resolve_nodes(None, None, None, {**SLURM, "METASUITE_RDZV_PORT": "1234"}).port == 1234
    assert resolve_nodes(None, None, None, {**SLURM, "METASUITE_RDZV_HOST": "10.0.0.7"}).host == (
        "10.0.0.7"
    )
    # A step's own node count and list come first (srun on part of an allocation).
    step = {**SLURM, "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_NODELIST": "gpu[08-09]"}
    assert resolve_nodes(None, None, None, {**step, "SLURM_NODEID": "1"}).host == "gpu08"
    # One node of an allocation, or options given: Slurm's variables are not used.
    assert resolve_nodes(None, None, None, {**SLURM, "SLURM_NNODES": "1"}).count == 1
    assert resolve_nodes(2, 0, "127.0.0.1:1", SLURM).host == "127.0.0.1"


def test_slurm_mistakes_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match=r"\$SLURM_NODEID is not set"):
        resolve_nodes(None, None, None, {k: v for k, v in SLURM.items() if k != "SLURM_NODEID"})
    with pytest.raises(UserError, match=r"\$SLURM_NNODES='x'"):
        resolve_nodes(None, None, None, {**SLURM, "SLURM_NNODES": "x"})
    with pytest.raises(UserError, match=r"cannot read the first host.*--rdzv-endpoint"):
        resolve_nodes(None, None, None, {**SLURM, "SLURM_JOB_NODELIST": "a[1-2]b[3-4]"})
    with pytest.raises(UserError, match=r"\$METASUITE_RDZV_PORT='0'"):
        resolve_nodes(None, None, None, {**SLURM, "METASUITE_RDZV_PORT": "0"})


def test_scontrol_expands_the_node_list_when_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    fake = tmp_path / "scontrol"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo "first-of-$3" && echo x\n')
    fake.chmod(0o755)
    monkeypatch.setattr(nodes.shutil, "which", lambda name: str(fake))
    assert nodes.first_host("weird[1-2]list[3]") == "first-of-weird[1-2]list[3]"


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("node1", ["node1"]),
        ("a,b", ["a", "b"]),
        ("node[1-3,7]", ["node1", "node2", "node3", "node7"]),
        ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
        ("rack[1-2]-ib,login", ["rack1-ib", "rack2-ib", "login"]),
        ("x[3],y[01-02]", ["x3", "y01", "y02"]),
    ],
)
def test_simple_host_list_forms(text: str, hosts: list[str]) -> None:
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text", ["a[1-2]b[3]", "a[x-y]", "a]b"])
def test_host_list_forms_not_known_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        expand_hostlist(text)


def test_torchrun_options() -> None:
    assert torchrun_options(nodes.ONE_NODE, "id", 60) == ["--standalone"]
    host = torchrun_options(Nodes(2, 0, "127.0.0.1", 29611), "metasuite-tiny", 60)
    assert host == [
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:29611",
        "--rdzv-id=metasuite-tiny",
        "--rdzv-conf=join_timeout=60,read_timeout=60,is_host=true",
    ]
    other = torchrun_options(Nodes(2, 1, "127.0.0.1", 29611), "metasuite-tiny", 60)
    assert other[-1].endswith("is_host=false")


def test_run_id_is_the_same_on_every_node_and_safe() -> None:
    assert nodes.run_id("omniglot 5way/1shot", {}) == "metasuite-omniglot_5way_1shot"
    assert nodes.run_id("x", {"SLURM_JOB_ID": "7"}) == "metasuite-x-7"


def test_rendezvous_timeout_from_the_environment() -> None:
    assert nodes.rdzv_timeout_seconds({}) == nodes.DEFAULT_RDZV_TIMEOUT_S
    assert nodes.rdzv_timeout_seconds({"METASUITE_RDZV_TIMEOUT_S": "7"}) == 7
    for bad in ("0", "x", "-3"):
        with pytest.raises(UserError, match="METASUITE_RDZV_TIMEOUT_S"):
            nodes.rdzv_timeout_seconds({"METASUITE_RDZV_TIMEOUT_S": bad})


def test_an_unknown_rendezvous_host_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 29: it waited the whole rendezvous timeout. `.invalid` never resolves
    (RFC 2606); the launcher refuses before starting torchrun."""
    from metasuite.training import distributed

    job = resolve_nodes(2, 1, "no-such-host.invalid:29400")
    with pytest.raises(UserError, match=r"'no-such-host\.invalid' of no-such-host\.invalid:29400"):
        nodes.check_host_resolves(job)

    def never(*args, **kwargs):
        raise AssertionError("torchrun started for a host that does not resolve")

    monkeypatch.setattr(distributed.subprocess, "Popen", never)
    monkeypatch.setenv("METASUITE_RDZV_TIMEOUT_S", "300")
    with pytest.raises(UserError, match="does not resolve"):
        distributed.launch(["--config", "x.json"], 1, job)
    nodes.check_host_resolves(resolve_nodes(2, 0, "127.0.0.1:29400"))  # resolves: no error
    nodes.check_host_resolves(nodes.ONE_NODE)
