#!/usr/bin/env python3
"""Build datasets/wordnet_glosses.tar.bz2 from WordNet 3.0 (Debian's wordnet-base).

Each synset of data.noun/verb/adj/adv becomes one JSON line
``{"text": <gloss>, "label": <lexicographer class>, "synset": <offset.pos>}``; the
label is the lexicographer file number (the second field of each data line) named by
WordNet's ``lexnames`` table (45 classes: noun.food, verb.motion, ...). The archive holds
``wordnet_glosses/wordnet_glosses.jsonl`` and WordNet's licence notice, so a fresh clone
has a real text corpus offline, without apt. Deterministic (sorted members, fixed
mtimes), so rebuilding gives the same bytes' content.

    apt-get install -y wordnet-base && python3 utils/build_wordnet_glosses.py
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import tarfile
from pathlib import Path

# WordNet 3.0 lexnames (lexnames(5WN)): lexicographer file number -> name.
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
POS_FILES = ("noun", "verb", "adj", "adv")
LICENCE_HEADER = """\
wordnet_glosses: the glosses of WordNet 3.0's synsets, each labelled with its
lexicographer class (lexnames), one JSON object per line. Derived from WordNet 3.0
(Debian package wordnet-base, /usr/share/wordnet/data.*) by utils/build_wordnet_glosses.py.

WordNet Release 3.0 -- George A. Miller, Christiane Fellbaum et al., Princeton University.
WordNet's licence follows; it applies to this derived file too.

"""


def glosses(wordnet: Path) -> list[dict[str, str]]:
    rows = []
    for pos in POS_FILES:
        for line in (wordnet / f"data.{pos}").read_text(encoding="utf-8").splitlines():
            if line.startswith("  "):  # the licence header of each data file
                continue
            fields, _, gloss = line.partition(" | ")
            parts = fields.split()
            offset, lex = parts[0], int(parts[1])
            rows.append(
                {"text": gloss.strip(), "label": LEXNAMES[lex], "synset": f"{offset}.{pos}"}
            )
    return rows


def licence(copyright_file: Path) -> str:
    text = copyright_file.read_text(encoding="utf-8")
    start = text.index("License: WordNet3.0")
    body = text[start:].split("\n\nFiles:", 1)[0]
    lines = [ln[1:] if ln.startswith(" ") else ln for ln in body.splitlines()]
    return LICENCE_HEADER + "\n".join("" if ln == "." else ln for ln in lines) + "\n"


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument(
        "--copyright", type=Path, default=Path("/usr/share/doc/wordnet-base/copyright")
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "datasets"
    )
    args = parser.parse_args()
    if not (args.wordnet / "data.noun").is_file():
        raise SystemExit(
            f"{args.wordnet}/data.noun not found: apt-get install -y wordnet-base (Debian)"
        )
    rows = glosses(args.wordnet)
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    notice = licence(args.copyright).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add(tar, "wordnet_glosses/LICENSE-wordnet.txt", notice)
        add(tar, "wordnet_glosses/wordnet_glosses.jsonl", jsonl)
    out = args.out / "wordnet_glosses.tar.bz2"
    out.write_bytes(bz2.compress(buffer.getvalue(), 9))
    (args.out / "LICENSE-wordnet.txt").write_bytes(notice)
    classes = len({r["label"] for r in rows})
    print(f"{out}: {len(rows)} glosses in {classes} classes, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
