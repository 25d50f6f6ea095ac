"""``python -m fastnet``: the catalogue of the notes' examples, and ``--version``."""

from __future__ import annotations

import argparse
import sys


def _version_line() -> str:
    import fastnet
    from fastnet import _compat

    overall = fastnet.IMPLEMENTATION
    parts = ", ".join(f"{name.split('.', 1)[1]}={impl}" for name, impl in sorted(_compat.implementations().items()))
    return f"fastnet {fastnet.__version__} (implementation: {overall}; {parts})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fastnet",
        description="Print the catalogue of the notes' examples: where each is in the notes, the "
        "command that runs it, and what it shows. Every listed command takes --help.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and the active implementation")
    parser.add_argument("--markdown", action="store_true", help="print the catalogue as a Markdown table")
    args = parser.parse_args(argv)
    if args.version:
        print(_version_line())
        return 0
    from fastnet import _cli, catalogue

    _cli._setup_output()
    try:
        print(catalogue.as_markdown() if args.markdown else catalogue.as_text(), flush=True)
    except BrokenPipeError:
        _cli._stdout_gone()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
