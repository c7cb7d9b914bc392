"""Verdicts do not depend on the dtype (issue 12): the smoke build of the chapters whose forward pass
follows ``dtype="auto"`` gives the same verdicts with ``ALIGNMENT_DYNAMICS_DTYPE=float32`` and with
``=bfloat16``.

The smoke profile runs the tiny random models, so this is cheap even where bfloat16 is emulated; what
it checks is the plumbing (the resolved dtype reaches the embeddings, the caches keep the two apart,
every verdict rule is computed from numbers that survive bfloat16 rounding), not a real model's numbers.
"""

from __future__ import annotations

import json

from alignment_dynamics import config

# The chapters whose configuration has a dtype (persona_data embeds with dtype="auto" too); intro
# collects their claims into claims.json.
DTYPE_CHAPTERS = ["persona_data", "distinguishability", "training_dynamics", "prioritization"]


def test_the_dtype_chapters_are_the_ones_with_a_dtype():
    with_dtype = {s for s in config.CHAPTERS if "dtype" in {k.lower() for k in config.resolve(s, "smoke")}}
    assert with_dtype <= set(DTYPE_CHAPTERS), with_dtype


def test_smoke_verdicts_are_the_same_in_float32_and_bfloat16(run_build, tmp_path):
    verdicts, dtypes = {}, {}
    for dt in ("float32", "bfloat16"):
        out = tmp_path / dt
        proc = run_build("--profile", "smoke", "--no-render", "--only", ",".join(["intro", *DTYPE_CHAPTERS]),
                         build_dir=out, env={"ALIGNMENT_DYNAMICS_DTYPE": dt})
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
        report = json.loads((out / "report.json").read_text())
        dtypes[dt] = report["machine"]["auto_dtype"]
        claims = json.loads((out / "claims.json").read_text())["claims"]
        verdicts[dt] = {(c["chapter"], c["claim"]): c["verdict"] for c in claims}
    assert dtypes == {"float32": "float32", "bfloat16": "bfloat16"}, "the override did not reach the build"
    assert {ch for ch, _ in verdicts["float32"]} >= set(DTYPE_CHAPTERS), "a dtype chapter made no claim"
    assert verdicts["float32"].keys() == verdicts["bfloat16"].keys()
    differ = {k: (v, verdicts["bfloat16"][k]) for k, v in verdicts["float32"].items() if verdicts["bfloat16"][k] != v}
    assert not differ, f"verdicts that change with the dtype (float32, bfloat16): {differ}"
