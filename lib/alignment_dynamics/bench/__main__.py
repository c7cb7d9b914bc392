"""Dispatch ``python -m alignment_dynamics.bench <name> [options]`` to a benchmark's ``main``."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("embed", "dpo")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in BENCHMARKS:
        which = f"unknown benchmark {argv[0]!r}; " if argv and argv[0] not in ("-h", "--help") else ""
        print(f"{which}usage: python -m alignment_dynamics.bench {{{'|'.join(BENCHMARKS)}}} [options]",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"alignment_dynamics.bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
