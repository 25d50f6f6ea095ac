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
    parser = argparse.ArgumentParser(prog="python -m fastnet", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and the active implementation")
    args = parser.parse_args(argv)
    if args.version:
        print(_version_line())
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
