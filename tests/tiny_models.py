"""A tiny random Llama registered as a packaged model, for the data/models/embed tests.

``register(tmp_path)`` adds ``tiny-test`` to ``models.REGISTRY``: the library's own tiny spec
(``models.tiny_spec``, the factory of the registered ``tiny-random-llama`` models), whose "GGUF" is its
recipe file (so the fingerprint changes with the seed) and whose source loader returns
``models.tiny(seed)``: conversion, loading, fingerprints and the embedding cache then run exactly as
for the real models, in well under a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alignment_dynamics import models

NAME = "tiny-test"
LIB = str(Path(models.__file__).resolve().parents[1])


def spec(folder: Path, seed: int = 0, name: str = NAME) -> models.ModelSpec:
    """The library's tiny spec (:func:`models.tiny_spec`, as the registered ``tiny-random-llama``), its
    recipe file written into ``folder``."""
    return models.tiny_spec(name, seed, folder=Path(folder))


def register(monkeypatch, folder: Path, seed: int = 0) -> str:
    monkeypatch.setitem(models.REGISTRY, NAME, spec(folder, seed))
    monkeypatch.setattr(models, "_SHARED", {})
    return NAME


def run_script(code: str, cache_dir: Path, *, wait_for: str | None = None):
    """Start ``python -c code`` with this checkout's library and ``cache_dir`` as the user cache.

    With ``wait_for``, return the running process once it printed that line (the caller kills it).
    """
    env = dict(os.environ, PYTHONPATH=LIB, ALIGNMENT_DYNAMICS_CACHE=str(cache_dir), TQDM_DISABLE="1")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    if wait_for is None:
        out, _ = proc.communicate(timeout=300)
        return proc.returncode, out
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == wait_for:
            return proc
    proc.wait(timeout=60)
    raise AssertionError(f"the script ended before printing {wait_for!r}:\n{''.join(lines)}")


PRELUDE = f"""
import sys, time
sys.path.insert(0, {os.path.dirname(__file__)!r})
import tiny_models
from pathlib import Path
from alignment_dynamics import models, embed, cache
models.REGISTRY[tiny_models.NAME] = tiny_models.spec(Path(cache.user_cache_dir('fake-gguf')))
"""
