"""Reference-repo entry point: ``python generate_configs.py`` = ``metasuite generate``
(see _entry.py)."""

from _entry import generate  # this script's folder is on sys.path

if __name__ == "__main__":
    raise SystemExit(generate())
