"""The test tiers: a test that uses the build fixtures is in the book tier without being marked by hand."""

from __future__ import annotations

import subprocess
import sys


def _collected(root, marker_expr: str, *files: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", marker_expr, *files], cwd=root, text=True, capture_output=True, timeout=300)
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr  # 5: nothing collected
    return {line.split("::", 1)[1] for line in proc.stdout.splitlines() if "::" in line}


def test_build_fixture_users_are_marked_book(root):
    files = ("tests/test_dtype_verdicts.py", "tests/test_theory_bounds_json.py")
    library, book = _collected(root, "not book", *files), _collected(root, "book", *files)
    assert book == {"test_smoke_verdicts_are_the_same_in_float32_and_bfloat16",
                    "test_smoke_build_of_a_theory_chapter_writes_theory_bounds"}
    assert library == {"test_the_dtype_chapters_are_the_ones_with_a_dtype", "test_bound_summary_refuses_bad_rows"}
