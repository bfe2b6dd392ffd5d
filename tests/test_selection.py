"""``--only PATTERN``: one matching rule for generate, run-suite, submit, status, report."""

from __future__ import annotations

import pytest

from metasuite.cli import main
from metasuite.results.status import list_suite
from metasuite.selection import matches
from metasuite.suite.sweep import expand, load_suite
from suite_helpers import TINY_NAMES, write_suite


def test_shell_patterns_match_the_whole_name_and_words_a_part():
    assert matches("maml++_20way_1shot_s0", "*20way*")
    assert not matches("maml++_20way_1shot_s0", "20way*")  # a pattern spans the name
    assert matches("maml++_20way_1shot_s0", "20way")  # a plain word: contained
    assert matches("maml_5way_1shot_s1", "maml_5way_1shot_s?")
    assert not matches("maml++_5way_1shot_s1", "maml_5way")
    assert matches("anything", None) and matches("anything", [])
    assert matches("a_s1", ["nope", "*_s1"]) and not matches("a_s1", ["nope", "*_s0"])


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["20way"], ["maml++_20way_1shot_s0", "maml++_20way_1shot_s1"]),
        (["*_s1"], ["maml_5way_1shot_s1", "maml++_5way_1shot_s1", "maml++_20way_1shot_s1"]),
        (["maml_5way"], ["maml_5way_1shot_s0", "maml_5way_1shot_s1"]),
        (
            ["maml++_5way*", "20way_1shot_s0"],
            ["maml++_5way_1shot_s0", "maml++_5way_1shot_s1", "maml++_20way_1shot_s0"],
        ),
    ],
)
def test_generate_and_status_select_the_same_experiments(tmp_path, patterns, expected):
    suite_file = write_suite(tmp_path)
    assert main(["generate", "--suite", str(suite_file)]) == 0
    suite = load_suite(suite_file)
    generated = [e.name for e in expand(suite, only=patterns)]
    listed = [e.name for e in list_suite(tmp_path / "experiments", suite.config_dir, patterns)]
    assert generated == [n for n in TINY_NAMES if n in expected]  # grid order
    assert sorted(listed) == sorted(expected)
