"""``metasuite report --html``: numbers by hand, self-containment, damaged inputs named,
and the page opened in a real browser (headless Chromium; skipped without it)."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser_helpers import chromium, visit
from metasuite.cli import main
from metasuite.results.html import build_page
from synthetic_experiments import MAML, dead_pid, make_config, write_experiment

# (ensemble mean, ci95, best single mean, ci95) per seed of MAML++ 5-way 1-shot.
PLUS = [(0.95, 0.004, 0.90, 0.005), (0.97, 0.003, 0.94, 0.006), (0.96, 0.005, 0.92, 0.004)]
CURVES = [(0.5, 0.4), (0.7, 0.6), (0.8, 0.7)]


def val_records(epochs: int, *, lslr: bool) -> list[dict]:
    out = []
    for e in range(epochs):
        record = {"split": "val", "epoch": e, "iteration": 10 * (e + 1), "loss": 1.0,
                  "accuracy": 0.5, "msl_weights": [0.5 - 0.1 * e, 0.5 + 0.1 * e]}  # fmt: skip
        if lslr:
            record["lslr"] = {"conv0.weight": [0.1 + 0.01 * e, 0.1], "linear.bias": [0.1, 0.09]}
        out.append(record)
    return out


def write_log(folder: Path, records: list[dict]) -> None:
    (folder / "logs" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def write_manifest(folder: Path, runs: int) -> None:
    run = {
        "started": "2024-05-01T10:00:00Z",
        "ended": "2024-05-01T10:30:00Z",
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "config_hash": "f" * 64,
        "software": {"torch": "2.13.0+cpu"},
        "devices": [{"device": "cpu", "name": "EPYC"}],
    }
    runs_out = [dict(run, resumed_from=None if i == 0 else {"epoch": i}) for i in range(runs)]
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "runs": runs_out}))


@pytest.fixture
def suite(tmp_path: Path) -> tuple[Path, Path]:
    root, configs = tmp_path / "experiments", tmp_path / "experiment_config"
    for seed, test in enumerate(PLUS):
        folder = write_experiment(
            root,
            make_config(f"omni_plus_5w1s_s{seed}", seed),
            status="done",
            curves=CURVES,
            test=test,
            generated=configs,
        )
        write_log(folder, val_records(3, lslr=True))
        write_manifest(folder, runs=1 + seed)
    folder = write_experiment(
        root,
        make_config("omni_maml_5w1s_s0", 0, **MAML),
        status="done",
        curves=CURVES,
        test=(0.9, 0.01, 0.88, 0.01),
        generated=configs,
    )
    (folder / "logs" / "metrics.jsonl").write_text('{"split": "val"}\nnot json\n')
    write_experiment(root, make_config("omni_maml_5w1s_s1", 1, **MAML), status="running",
                     curves=CURVES[:1], generated=configs, pid=dead_pid())  # fmt: skip
    # Not the paper's method: no paper number beside it, no paper line for it.
    write_experiment(root, make_config("omni_anil_5w1s_s0", 0, **MAML, meta_learner="anil"),
                     status="done", curves=CURVES, test=(0.85, 0.01, 0.84, 0.01),
                     generated=configs)  # fmt: skip
    (root / "omni_plus_5w1s_s2" / "tensorboard").mkdir()
    (root / "omni_plus_5w1s_s2" / "tensorboard" / "events.out.tfevents.1.h.1").write_bytes(
        b"\x20" + b"\x00" * 7 + b"\xde\xad\xbe\xef" + b"x" * 40
    )
    return root, configs


class Census(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables = 0
        self.urls: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        self.tables += tag == "table"
        self.scripts += tag == "script"
        self.urls += [v for k, v in attrs if k in ("src", "href", "action") and v]


def test_page_numbers_problems_and_self_containment(suite: tuple[Path, Path], monkeypatch
                                                    ) -> None:  # fmt: skip
    from matplotlib.figure import Figure

    labels: list[str] = []
    save = Figure.savefig

    def recording_savefig(self, *args, **kwargs):
        labels.extend(line.get_label() for ax in self.axes for line in ax.lines)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording_savefig)
    page = build_page(*suite, quiet=True)
    census = Census()
    census.feed(page.text)
    # Tables: accuracy (one data set), per seed, not in the tables, provenance.
    assert census.tables == page.tables == 4
    # Figures: one setting's overlaid curves + three experiments' inner-loop diagnostics.
    assert len(census.images) == page.images == 4
    assert all(src.startswith("data:image/png;base64,") for src in census.images)
    assert all(u.startswith("data:") for u in census.urls) and census.scripts == 0
    assert "Content-Security-Policy" in page.text and "default-src 'none'" in page.text
    text = re.sub(r"(<[^>]+>)+", "|", page.text)
    # MAML++ ensemble 95, 97, 96: mean 96.00, CI 1.96 * 1.00 / sqrt(3) = 1.13;
    # best single 90, 94, 92: mean 92.00, CI 1.96 * 2.00 / sqrt(3) = 2.26.
    assert f"{1.96 / math.sqrt(3):.2f}" == "1.13"
    # Beside them the paper's published MAML++ 5-way 1-shot Omniglot figure.
    assert "|3 of 3|96.00|± 1.13|92.00|± 2.26|99.47 ± 0.05|—|" in text
    # MAML: one seed of two; the killed one named as missing; the paper's MAML figure.
    missing = "omni_maml_5w1s_s1 (killed (resumable))"
    assert f"|1 of 2|90.00|— (1 seed)|88.00|— (1 seed)|98.7 ± 0.4|{missing}|" in text
    # ANIL is not the paper's: its paper cell is empty.
    assert "|ANIL|5-way 1-shot|1 of 1|85.00|— (1 seed)|84.00|— (1 seed)|—|—|" in text
    assert "|Paper (%, full protocol)|" in text and "Antoniou et al." in text
    # The overlaid curves: a dashed reference line per paper method, none for ANIL.
    assert sorted(x for x in labels if x.startswith("paper")) == [
        "paper: MAML (98.7%, test)", "paper: MAML++ (99.47%, test)",
    ]  # fmt: skip
    # Provenance from the manifest: commit, hash, torch, device, wall time, resumes.
    assert "|omni_plus_5w1s_s2|done|0123456789|ffffffffffff|2.13.0+cpu|EPYC|1:30:00|2|" in text
    # Each damaged file named in one line; everything else is still on the page.
    damaged_log = suite[0] / "omni_maml_5w1s_s0" / "logs" / "metrics.jsonl"
    events = suite[0] / "omni_plus_5w1s_s2" / "tensorboard" / "events.out.tfevents.1.h.1"
    assert page.problems == [
        f"{damaged_log} line 1: damaged (not a metrics record)",
        f"{events}: damaged TensorBoard event file (bad record length at byte 0)",
    ]
    assert "omni_maml_5w1s_s0" in text and "|omni_plus_5w1s_s2|" in text


def test_cli_report_html(suite: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    root, configs = suite
    out = tmp_path / "out"
    args = ["report", "--experiments-root", str(root), "--configs", str(configs),
            "--out", str(out), "--quiet", "--html"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"html: {out / 'report.html'} (4 tables, 4 figures, self-contained)" in printed
    assert printed.count("problem: ") == 2
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (install.sh installs it)")
def test_the_page_in_headless_chromium(suite: tuple[Path, Path], tmp_path: Path) -> None:
    page = build_page(*suite, quiet=True)
    path = tmp_path / "report.html"
    path.write_text(page.text)
    seen = visit(path)
    assert seen.console == []
    assert seen.requests_leaving_the_file == []
    assert seen.dom["tables"] == page.tables == 4
    assert len(seen.dom["images"]) == page.images == 4
    assert all(i["complete"] and i["width"] > 300 for i in seen.dom["images"]), seen.dom

    # The checks can fail: a page that fetches and logs an error is caught by both.
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/a.png">'
                   '<script>console.error("boom")</script></body></html>')  # fmt: skip
    caught = visit(bad)
    assert caught.requests_leaving_the_file == ["http://example.invalid/a.png"]
    assert "console.error: boom" in caught.console
