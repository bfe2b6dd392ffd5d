"""Placeholder CLI, replaced below."""


def main(argv: list[str] | None = None) -> int:
    return 0
