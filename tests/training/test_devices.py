"""The one device-id grammar (metasuite.training.devices) and the launcher's mapping of
device words to CUDA_VISIBLE_DEVICES and ``train --gpus``."""

from __future__ import annotations

import pytest

from metasuite.training.devices import DeviceSpecError, gpu_indices, is_gpu_id, parse_devices
from metasuite.training.launch import cuda_visible_and_gpus, main


@pytest.mark.parametrize("word", ["0", "7", "12", "999"])
def test_gpu_ids(word: str) -> None:
    assert is_gpu_id(word)


@pytest.mark.parametrize("word", ["01", "1000", "-1", "x", "cpu", "", " 1", "\u00b2", "\u0661"])
def test_not_gpu_ids(word: str) -> None:
    assert not is_gpu_id(word)


def test_parse_devices_defaults_to_cpu_and_keeps_order() -> None:
    assert parse_devices([]) == ("cpu",)
    assert parse_devices(["cpu"]) == ("cpu",)
    assert parse_devices(["3", "1"]) == ("3", "1")
    assert gpu_indices(("3", "1")) == [3, 1] and gpu_indices(("cpu",)) == []


@pytest.mark.parametrize(
    ("words", "problem", "message"),
    [
        (["x"], "not a device", "'x' is not a device: give GPU ids (e.g. 0 1) or cpu"),
        (["1", "1", "x"], "twice", "device '1' is given twice"),  # the first mistake wins
        (["cpu", "cpu"], "twice", "device 'cpu' is given twice"),
        (["0", "cpu"], "cpu with gpus", "'cpu' cannot be combined with GPU ids"),
    ],
)
def test_parse_devices_mistakes(words: list[str], problem: str, message: str) -> None:
    with pytest.raises(DeviceSpecError) as info:
        parse_devices(words)
    assert info.value.problem == problem and str(info.value) == message


def test_devices_map_to_visible_gpus_renumbered() -> None:
    assert cuda_visible_and_gpus(("cpu",)) == ("", "cpu")
    assert cuda_visible_and_gpus(("3",)) == ("3", "0")
    assert cuda_visible_and_gpus(("2", "5", "7")) == ("2,5,7", "0,1,2")


def test_launcher_refuses_arguments_it_does_not_know(capsys: pytest.CaptureFixture) -> None:
    assert main(["--config"]) == 2
    assert main(["--slurm-job", "--script", "x.sh"]) == 2  # neither max_requeues nor off
    assert main(["--bogus", "--", "0"]) == 2
    assert capsys.readouterr().err.count("usage: python -m metasuite.training.launch") == 3


def test_a_gpu_the_machine_lacks_is_named_as_the_script_user_gave_it(tmp_path) -> None:
    """`bash X.sh 7` where there is no GPU 7 (on this machine, no usable GPU at all): the
    error names `X.sh 7`, not the `--gpus 0` the launcher passed on, nor any option the
    user never typed."""
    import json
    import os
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    config = tmp_path / "x.json"
    config.write_text(json.dumps({"experiment_name": "x"}))
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    proc = subprocess.run(
        [sys.executable, "-m", "metasuite.training.launch", "--config", str(config),
         "--name", "X.sh", "--", "7", "--", "--experiments-root", str(tmp_path / "exp")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "X.sh 7: no such GPU" in line
    assert "--gpus" not in line and "CUDA_VISIBLE_DEVICES=7" in line
    assert not (tmp_path / "exp").exists()
