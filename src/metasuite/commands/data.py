"""``metasuite data check PATH``: what a data set holds, as training would load it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from metasuite.errors import UserError

HELP = "inspect a data set: detected layout, classes and images per split, image cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check"], help="check: load and describe the data set")
    parser.add_argument(
        "path",
        metavar="PATH",
        help="an experiment config (.json), or a data set: a folder, an archive, or a "
        "dataset_path under the data set root ($DATASET_DIR, else datasets/)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="take image size, split and other data settings from this config "
        "(default: metasuite's defaults, Omniglot's 28x28x1)",
    )
    parser.add_argument(
        "--image-size",
        metavar="HxWxC",
        help="image_height x image_width x image_channels to load at, e.g. 84x84x3",
    )
    parser.add_argument("--progress", action="store_true", help="show progress bars")


def _image_size(text: str) -> dict[str, int]:
    match = re.fullmatch(r"(\d+)x(\d+)x([13])", text.strip())
    if not match:
        raise UserError(f"--image-size {text!r}: expected HxWxC with C 1 or 3, e.g. 84x84x3")
    h, w, c = (int(g) for g in match.groups())
    return {"image_height": h, "image_width": w, "image_channels": c}


def run(args: argparse.Namespace) -> int:
    from metasuite.config import ExperimentConfig, load_config, replace
    from metasuite.data.archive import archive_stem, archive_suffix
    from metasuite.data.check import describe_dataset

    path = Path(args.path).expanduser()
    changes: dict[str, object] = {}
    if path.suffix.lower() == ".json":
        if args.config:
            raise UserError("PATH is a config already; --config would name a second one")
        config = load_config(path)
    else:
        config = load_config(args.config) if args.config else ExperimentConfig()
        on_disk = path.exists()
        if path.is_file() and archive_suffix(path.name):
            path = path.parent / archive_stem(path.name)  # the folder it unpacks to
        # Something on disk is used where it is; a bare name is looked up under the root.
        changes["dataset_path"] = str(path.resolve()) if on_disk else args.path
        if not args.config:
            changes["dataset_name"] = path.name
    if args.image_size:
        changes |= _image_size(args.image_size)
    if changes:
        config = replace(config, source="metasuite data check", **changes)
    print(describe_dataset(config, quiet=not args.progress), end="")
    return 0
