"""Bad search files and options: one line, exit 2, nothing started or written."""

from __future__ import annotations

import pytest

from metasuite.cli import main
from metasuite.search.spec import load_search
from search_helpers import SPACE, search_text, write_search


def _refused(tmp_path, capsys, text: str, *options: str) -> str:
    search = write_search(tmp_path / "s", text)
    root = tmp_path / "experiments"
    code = main(["tune", str(search), "--experiments-root", str(root), *options])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("metasuite tune: error: "), err
    assert not (tmp_path / "s" / "out").exists()  # no study, no trial files
    assert not root.exists()
    return lines[0]


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        (
            SPACE.replace("init_inner_loop_learning_rate", "init_inner_loop_learning_rat"),
            "'init_inner_loop_learning_rat' is neither a config key nor a constant of the "
            "search (closest: init_inner_loop_learning_rate",
        ),
        (SPACE.replace("low = 1\n", "low = 2\n"), "empty or inverted range low = 2, high = 2"),
        (SPACE.replace("high = 1.0", "high = 0.0001"), "empty or inverted range low = 0.001"),
        (SPACE.replace("low = 0.001", "low = 0.0"), "log = true needs low > 0"),
        (SPACE.replace('type = "int"', 'type = "integer"'), "type must be one of float, int"),
        (SPACE + '[space.trial]\ntype = "int"\nlow = 1\nhigh = 2\n', "is the trial number"),
    ],
)
def test_bad_space(tmp_path, capsys, space, expected):
    assert expected in _refused(tmp_path, capsys, search_text(space=space))


SAMPLER = "seed = 0\n\n[pruner]"
BAD_KINDS_AND_SETTINGS = [
    (SAMPLER, 'kind = "tpee"\n\n[pruner]', "sampler.kind 'tpee' is not a known sampler"),
    ('kind = "median"', 'kind = "medain"', "pruner.kind 'medain' is not a known pruner"),
    ("n_startup_trials = 1", "n_startup_trial = 1", "[pruner]: unknown setting 'n_startup_trial'"),
    (SAMPLER, "n_startup_trial = 2\n\n[pruner]", "[sampler]: unknown setting 'n_startup_trial'"),
]


@pytest.mark.parametrize(("old", "new", "expected"), BAD_KINDS_AND_SETTINGS)
def test_bad_sampler_or_pruner(tmp_path, capsys, old, new, expected):
    text = search_text()
    assert old in text
    line = _refused(tmp_path, capsys, text.replace(old, new))
    assert expected in line and "(closest: " in line


def test_bad_objective(tmp_path, capsys):
    text = search_text().replace("trials = 4", 'trials = 4\nobjective = "best_val_acc"')
    expected = "search.objective 'best_val_acc' is not known (closest: best_val_accuracy"
    assert expected in _refused(tmp_path, capsys, text)


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg2://nobody@127.0.0.1:1/nothing", "nosuchdb://host/x", "sqlite:////nonexistent/dir/s.db"],
)  # fmt: skip
def test_storage_that_cannot_be_opened(tmp_path, capsys, url):
    line = _refused(tmp_path, capsys, search_text(), "--storage", url)
    assert f"storage {url}: cannot open it" in line


def test_bad_trials_and_workers(tmp_path, capsys):
    assert "--trials must be >= 1" in _refused(tmp_path, capsys, search_text(), "--trials", "0")
    assert "--workers must be >= 1" in _refused(tmp_path, capsys, search_text(), "--workers", "0")
    text = search_text().replace("trials = 4\n", "")
    assert "--trials N is missing" in _refused(tmp_path, capsys, text)


def test_space_keys_are_config_keys_or_constants(tmp_path):
    search = load_search(write_search(tmp_path))
    by_name = {p.name: p for p in search.space}
    assert not by_name["init_inner_loop_learning_rate"].template_variable
    assert by_name["inner_steps"].template_variable  # a constant: substituted in the template
    assert search.suite.config_keys == ("init_inner_loop_learning_rate",)
    assert search.storage == f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    assert search.study_name == "search"


def test_optuna_is_imported_by_one_module_only_and_not_for_help():
    import re
    import subprocess
    import sys
    from pathlib import Path

    import metasuite

    src = Path(metasuite.__file__).parent
    importers = sorted(
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if re.search(r"^\s*(import optuna|from optuna)", p.read_text(), re.MULTILINE)
    )
    assert importers == ["search/engine.py"]
    code = (
        "import sys; from metasuite.cli import build_parser; build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_second_driver_on_one_sqlite_study_is_refused(tmp_path, capsys):
    import fcntl
    import os

    search = write_search(tmp_path / "s")
    (tmp_path / "s" / "out").mkdir()
    fd = os.open(tmp_path / "s" / "out", os.O_RDONLY)  # as a running driver holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code = main(["tune", str(search), "--experiments-root", str(tmp_path / "e")])
    finally:
        os.close(fd)
    assert code == 2
    assert "another metasuite tune is running the search" in capsys.readouterr().err
    assert not (tmp_path / "s" / "out" / "study.db").exists()
