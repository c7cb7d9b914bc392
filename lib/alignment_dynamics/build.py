"""The staged build of the book: execute every chapter with papermill, then render with Jupyter Book.

Jupyter Book cannot pass parameters and papermill cannot read MyST markdown, so the build goes in
stages (``python -m alignment_dynamics.build``; ``make book`` runs it):

1. Read the chapter list from ``_toc.yml``. Convert each MyST chapter to a notebook with jupytext and
   set its kernelspec to ``python3``.
2. Compute the chapter's cache key: its normalised source, its parameters (``PROFILE`` plus overrides),
   a hash of ``lib/alignment_dynamics``, the fingerprints of the data sets and models it uses, the
   versions of the execution stack, and ``artifacts/MANIFEST.json`` where it reads artefacts. On a hit,
   reuse the stored executed notebook.
3. Otherwise run it with papermill (kernel ``python3``, the per-cell timeout of ``_config.yml``).
4. Stage the executed notebooks in ``<build>/stage`` in place of the sources and render them with
   ``jupyter-book build -n -W --keep-going`` with execution off; move the HTML to ``<build>/html``.
5. Write ``<build>/report.json``. Exit non-zero if any chapter or the render failed (Jupyter Book alone
   exits 0 on a failed notebook).

The introduction (the claims scorecard) and the reproducibility chapter (the execution report) run
after all other chapters, because they show what the others produced.

Every file is written atomically, so a build killed at any moment (even ``kill -9``) and run again
gives a correct book.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import artifacts, cache, config, hardware
from .book import bounds_from_notebook, claims_from_notebook, runtime_cell

KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
STACK = ("numpy", "torch", "transformers", "papermill", "nbclient", "jupytext", "myst-nb")


class BuildError(RuntimeError):
    """A problem with the book's sources or a build request."""


class Interrupted(BaseException):
    """The build received SIGINT or SIGTERM (raised by the handlers :func:`main` installs)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_SIGNALLED: list[int] = []  # the signals received, so that a kernel's failure caused by one is not a chapter failure


def _on_signal(signum, frame):  # pragma: no cover - exercised through subprocess tests
    _SIGNALLED.append(signum)
    raise Interrupted(signum)


def _input_errors() -> tuple[type, ...]:
    """The errors of a request's inputs (a model that cannot be had, a dataset that is missing)."""
    from . import data, models

    return (config.ConfigError, models.ModelError, data.DataError)


# ---------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------

@dataclass
class Page:
    """One entry of ``_toc.yml``."""

    file: str  # as written in _toc.yml, e.g. "book/intro"
    path: Path  # the source file
    notebook: bool  # a jupytext notebook (executed) or a plain page (copied)

    @property
    def slug(self) -> str:
        return Path(self.file).name


def find_root(start: Path | None = None) -> Path:
    start = (start or Path.cwd()).resolve()
    for p in (start, *start.parents):
        if (p / "_toc.yml").exists() and (p / "_config.yml").exists():
            return p
    raise BuildError(f"no _toc.yml and _config.yml in {start} or above: run from the book's repository")


def _load_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def read_toc(root: Path) -> list[Page]:
    """The pages of ``_toc.yml`` in reading order; a missing file is an error."""
    toc = _load_yaml(root / "_toc.yml")
    files: list[str] = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    pages = []
    for f in files:
        stem = Path(f)
        candidates = [root / f"{stem}.md", root / f"{stem}.ipynb"]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise BuildError(f"_toc.yml names {f!r} but neither {candidates[0].name} nor .ipynb exists")
        if path.suffix == ".ipynb":
            raise BuildError(f"{path}: chapters are MyST markdown; commit the .md, not a notebook")
        pages.append(Page(file=f, path=path, notebook=is_notebook_source(path)))
    slugs = [p.slug for p in pages]
    dup = {s for s in slugs if slugs.count(s) > 1}
    if dup:
        raise BuildError(f"duplicate chapter names in _toc.yml: {sorted(dup)}")
    return pages


def is_notebook_source(path: Path) -> bool:
    """A MyST file with a jupytext/kernelspec header is a notebook chapter."""
    text = path.read_text()
    if not text.startswith("---"):
        return False
    header = text.split("---", 2)[1]
    return "kernelspec:" in header


def load_notebook(path: Path):
    """The chapter as a notebook (jupytext), with kernelspec ``python3``."""
    import jupytext

    nb = jupytext.read(path, fmt="md:myst")
    nb.metadata["kernelspec"] = dict(KERNEL)
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def normalised_source(nb) -> str:
    import jupytext

    clean = copy.deepcopy(nb)
    clean.metadata.pop("jupytext", None)
    return jupytext.writes(clean, fmt="md:myst")


def parameters_cell(nb, where: str = "chapter") -> tuple[int, dict[str, Any]]:
    """Index and literal values of the one code cell tagged ``parameters``.

    Errors if there is none, more than one, or if it holds anything but ``NAME = <literal>``.
    """
    idx = [i for i, c in enumerate(nb.cells)
           if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(idx) != 1:
        raise BuildError(f"{where}: expected exactly one cell tagged 'parameters', found {len(idx)}")
    src = nb.cells[idx[0]].source
    try:
        tree = ast.parse(src)
    except SyntaxError as exc:
        raise BuildError(f"{where}: parameters cell is not valid Python: {exc}") from exc
    values: dict[str, Any] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise BuildError(f"{where}: the parameters cell may only hold 'NAME = <literal>' lines, "
                             f"found {ast.unparse(stmt)!r}")
        name = stmt.targets[0].id
        try:
            values[name] = ast.literal_eval(stmt.value)
        except ValueError as exc:
            raise BuildError(f"{where}: parameter {name} is not a literal: {ast.unparse(stmt.value)!r}") from exc
    return idx[0], values


# ---------------------------------------------------------------------------------------------------
# Cache keys
# ---------------------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in STACK:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def lib_digest(root: Path) -> str:
    return cache.tree_digest(root / "lib" / "alignment_dynamics")


def data_fingerprints(datasets) -> dict[str, Any]:
    if not datasets:
        return {}
    from . import data

    return {name: data.fingerprint(name) for name in datasets}


def model_fingerprints(names) -> dict[str, Any]:
    if not names:
        return {}
    from . import models

    return {name: models.fingerprint(name) for name in names}


def artifacts_digest(root: Path) -> str:
    manifest = root / "artifacts" / "MANIFEST.json"
    return cache.file_sha256(manifest) if manifest.exists() else "no-artifacts"


# ---------------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------------

@dataclass
class ChapterResult:
    name: str
    status: str  # "ok" | "failed" | "skipped"
    cached: bool
    wall_s: float
    key: str = ""
    error: str = ""
    executed: str = ""  # path of the executed notebook

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "cached": self.cached, "wall_s": round(self.wall_s, 3),
                "key": self.key, "error": self.error}


@dataclass
class Build:
    root: Path
    build_dir: Path
    profile: str
    overrides: dict[str, Any] = field(default_factory=dict)
    use_cache: bool = True
    timeout: int = 1800
    results: list[ChapterResult] = field(default_factory=list)
    kernel_files: dict[str, str] = field(default_factory=dict)  # ALIGNMENT_DYNAMICS_CLAIMS / _REPORT

    def __post_init__(self):
        self.cache_dir = self.build_dir / "cache" / "chapters"
        self.work_dir = self.build_dir / "work"
        self.failed_dir = self.build_dir / "failed"
        for d in (self.cache_dir, self.work_dir):
            d.mkdir(parents=True, exist_ok=True)
        cache.sweep_temporaries(self.build_dir)
        self._lib = lib_digest(self.root)
        self._versions = versions()
        self.timeout = int(_load_yaml(self.root / "_config.yml").get("execute", {}).get("timeout", self.timeout))

    # -- keys ---------------------------------------------------------------------------------------
    def params_for(self, page: Page, nb) -> dict[str, Any]:
        spec = config.chapter(page.slug)
        _, defaults = parameters_cell(nb, where=str(page.path))
        params = config.profile_params(page.slug, self.profile)
        unknown_in_cell = sorted(set(defaults) - set(params))
        missing_in_cell = sorted(set(params) - set(defaults))
        if unknown_in_cell or missing_in_cell:
            raise BuildError(f"{page.path}: the parameters cell and chapters/{page.slug}.py disagree: "
                             f"only in the cell {unknown_in_cell}, only in the spec {missing_in_cell}")
        for name, value in self.overrides.items():
            if name not in defaults:
                raise BuildError(f"chapter {page.slug!r} has no parameter {name!r}; its parameters are "
                                 f"{sorted(defaults)}.{config.suggest(name, defaults)}")
            params[name] = value
        try:
            params = config.validate_params(page.slug, params)
        except config.ConfigError as exc:
            raise BuildError(f"chapter {page.slug!r}: {exc}") from exc
        del spec
        return params

    def key_for(self, page: Page, nb, params: dict[str, Any], extra: Any = None) -> str:
        spec = config.chapter(page.slug)
        try:
            return self._key(page, nb, params, extra, spec)
        except _input_errors() as exc:
            raise BuildError(f"chapter {page.slug!r}: {exc}") from exc

    def _key(self, page: Page, nb, params, extra, spec) -> str:
        return cache.digest(
            "chapter-v2",
            normalised_source(nb),
            params,
            self._lib,
            data_fingerprints(spec.datasets),
            model_fingerprints(config.model_params(page.slug, params)),
            self._versions,
            artifacts_digest(self.root) if spec.reads_artifacts else "",
            extra,
            # what dtype="auto" means here (numbers may depend on it) and the CPU (its times do)
            hardware.auto_dtype(), hardware.cpu_model(),
        )

    # -- one chapter --------------------------------------------------------------------------------
    def execute(self, page: Page, extra_key: Any = None, progress: str = "") -> ChapterResult:
        t0 = time.perf_counter()
        nb = load_notebook(page.path)
        params = self.params_for(page, nb)
        key = self.key_for(page, nb, params, extra_key)
        cached_path = self.cache_dir / f"{page.slug}-{key[:32]}.ipynb"
        if self.use_cache and cached_path.exists():
            problem = entry_problem(cached_path, page.slug, key)
            if problem is None:
                print(f"{progress} {page.slug}: cached ({key[:12]})", flush=True)
                return ChapterResult(page.slug, "ok", True, time.perf_counter() - t0, key, executed=str(cached_path))
            print(f"{progress} {page.slug}: cache entry {cached_path} is corrupt ({problem}); executing again",
                  flush=True)
            cached_path.unlink(missing_ok=True)
        print(f"{progress} {page.slug}: executing with {params}", flush=True)
        import nbformat
        import papermill

        src = self.work_dir / f"{page.slug}.source.ipynb"
        out = self.work_dir / f"{page.slug}.executed.ipynb"
        cache.write_text_atomic(src, nbformat.writes(nb))
        out.unlink(missing_ok=True)
        env_keys = self._kernel_env()
        read_log = self.work_dir / f"{page.slug}.artifacts.log"
        read_log.unlink(missing_ok=True)
        os.environ[artifacts.READ_LOG_ENV] = str(read_log)
        env_keys.append(artifacts.READ_LOG_ENV)
        try:
            papermill.execute_notebook(
                str(src), str(out), parameters=params, kernel_name="python3", cwd=str(page.path.parent),
                execution_timeout=self.timeout, log_output=True, progress_bar=True, report_mode=False,
            )
        except Exception as exc:  # papermill raises PapermillExecutionError and friends
            if _SIGNALLED:  # the kernel died of the same Ctrl-C / SIGTERM: an interruption, not a failure
                raise Interrupted(_SIGNALLED[-1]) from exc
            disk = cache.disk_error(exc)
            if disk is not None:
                raise disk from exc
            wall = time.perf_counter() - t0
            if out.exists():
                self.failed_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(out, self.failed_dir / f"{page.slug}.ipynb")
            msg = _short_error(exc)
            print(f"{progress} {page.slug}: FAILED after {wall:.1f} s: {msg}", flush=True)
            return ChapterResult(page.slug, "failed", False, wall, key, error=msg)
        finally:
            for k in env_keys:
                os.environ.pop(k, None)
        wall = time.perf_counter() - t0
        undeclared = undeclared_artifacts(page.slug, read_log)
        if undeclared:
            print(f"{progress} {page.slug}: FAILED after {wall:.1f} s: {undeclared}", flush=True)
            return ChapterResult(page.slug, "failed", False, wall, key, error=undeclared)
        executed = nbformat.read(out, as_version=4)
        _tag_injected(executed, "remove-cell" if self.profile == "fast" else "hide-cell")
        executed.cells.append(runtime_cell(page.slug, wall))
        executed.metadata["alignment_dynamics"] = {
            "key": key, "chapter": page.slug, "profile": self.profile, "parameters": params,
            "wall_s": round(wall, 3), "versions": self._versions,
        }
        cache.write_text_atomic(cached_path, nbformat.writes(executed))
        out.unlink(missing_ok=True)
        print(f"{progress} {page.slug}: ok in {wall:.1f} s", flush=True)
        return ChapterResult(page.slug, "ok", False, wall, key, executed=str(cached_path))

    def _kernel_env(self) -> list[str]:
        env = {
            "ALIGNMENT_DYNAMICS_ROOT": str(self.root),
            "ALIGNMENT_DYNAMICS_BUILD_DIR": str(self.build_dir),
            "ALIGNMENT_DYNAMICS_PROFILE": self.profile,
            "PYTHONHASHSEED": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            **self.kernel_files,
        }
        added = [k for k in env if k not in os.environ or k in self.kernel_files]
        os.environ.update(env)
        return added


def undeclared_artifacts(slug: str, read_log: str | Path) -> str | None:
    """``None`` when chapter ``slug`` read no artefact (``read_log``: what :func:`artifacts.load`
    recorded while it ran) or declares ``reads_artifacts``; else the error: its cached result would not
    notice a changed artefact."""
    read = artifacts.reads_logged(read_log)
    if not read or config.chapter(slug).reads_artifacts:
        return None
    return (f"chapter {slug!r} read stored artefacts ({', '.join(read[:3])}{' ...' if len(read) > 3 else ''}) but its "
            f"spec (lib/alignment_dynamics/chapters/{slug}.py) does not declare reads_artifacts=True, so its "
            "cached result would not see them change")


def entry_problem(path: Path, slug: str, key: str | None = None) -> str | None:
    """``None`` when ``path`` is a valid executed notebook of chapter ``slug`` (and of ``key`` when
    given), else a short reason: unreadable, not JSON, not a valid nbformat-4 notebook, another
    chapter's or another key's.
    """
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    except Exception as exc:  # NotJSONError, JSONDecodeError, a missing nbformat field ...
        return f"not a notebook: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
    try:
        nbformat.validate(nb)
    except Exception as exc:  # nbformat.ValidationError
        return f"not a valid notebook: {str(exc).splitlines()[0][:120]}"
    meta = nb.metadata.get("alignment_dynamics") if isinstance(nb.metadata, dict) else None
    if not isinstance(meta, dict) or "key" not in meta:
        return "it carries no build key"
    if meta.get("chapter", slug) != slug:
        return f"it is chapter {meta.get('chapter')!r}, not {slug!r}"
    if key is not None and meta["key"] != key:
        return f"its key {str(meta['key'])[:12]} is not {key[:12]}"
    if not nb.cells:
        return "it has no cells"
    return None


def _short_error(exc: Exception) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = " | ".join(lines[-3:]) if lines else type(exc).__name__
    return text[:600]


def _tag_injected(nb, tag: str) -> None:
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and tag not in tags:
            cell.metadata["tags"] = tags + [tag]


# ---------------------------------------------------------------------------------------------------
# Stage and render
# ---------------------------------------------------------------------------------------------------

def stage(root: Path, stage_dir: Path, pages: list[Page], executed: dict[str, Path],
          toc_subset: list[Page] | None = None) -> None:
    """Copy the book's sources into ``stage_dir``, replacing each executed chapter by its notebook."""
    import yaml

    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    stage_dir.mkdir(parents=True)
    cfg = _load_yaml(root / "_config.yml")
    cfg.setdefault("execute", {})["execute_notebooks"] = "off"
    cfg.setdefault("html", {})["use_edit_page_button"] = False
    (stage_dir / "_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if toc_subset is None:
        shutil.copyfile(root / "_toc.yml", stage_dir / "_toc.yml")
    else:
        toc = {"format": "jb-book", "root": toc_subset[0].file,
               "chapters": [{"file": p.file} for p in toc_subset[1:]]}
        (stage_dir / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    for extra in ("references.bib",):
        if (root / extra).exists():
            shutil.copyfile(root / extra, stage_dir / extra)
    notebook_sources = {p.path.resolve() for p in pages if p.notebook}
    src_book = root / "book"
    for path in sorted(src_book.rglob("*")):
        rel = path.relative_to(src_book)
        if any(part.startswith(".") or part in ("__pycache__", ".ipynb_checkpoints") for part in rel.parts):
            continue
        dest = stage_dir / "book" / rel
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif path.resolve() in notebook_sources:
            continue
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    for page in pages:
        if page.notebook and page.slug in executed:
            dest = stage_dir / f"{page.file}.ipynb"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(executed[page.slug], dest)
        elif page.notebook:  # not executed here: render the source, unexecuted
            dest = stage_dir / f"{page.file}.md"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(page.path, dest)


def render(stage_dir: Path, html_dir: Path, strict: bool = True,
           expected: list[str] | None = None) -> tuple[bool, float, str]:
    """Render the staged book with Jupyter Book; move the HTML to ``html_dir`` atomically.

    Only a successful render (exit 0, ``index.html`` and every page of ``expected`` present, and in
    strict mode no traceback) replaces ``html_dir``: a failed one leaves the previous pages as they
    are, and its output stays in ``<stage>/../render`` for inspection.
    """
    t0 = time.perf_counter()
    out = stage_dir.parent / "render"
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(stage_dir), "--path-output", str(out), "--keep-going"]
    if strict:
        cmd += ["-n", "-W"]
    print("render:", " ".join(cmd[3:]), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    log = proc.stdout + proc.stderr
    print(_tail(log, 60), flush=True)
    built = out / "_build" / "html"
    ok = proc.returncode == 0 and (built / "index.html").exists()
    if "Traceback (most recent call last)" in log and strict:
        ok = False
    missing = [f for f in (expected or []) if not (built / f"{f}.html").exists()]
    if missing:
        ok = False
        log += f"\nmissing pages: {missing}"
    disk = re.search(r"(OSError|PermissionError): \[Errno (28|30|13|122)\][^\n]*", log)
    if disk:
        print(f"render: the render could not write its output: {disk.group(0)}", flush=True)
    if ok:
        with cache.atomic_path(html_dir) as tmp:
            shutil.copytree(built, tmp)
    else:
        print(f"render: FAILED; the previous pages in {html_dir} are kept (the failed render is in {out})", flush=True)
    return ok, time.perf_counter() - t0, _tail(log, 40)


def _tail(text: str, n: int) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


STALE_MARK = "alignment-dynamics-stale"


def mark_stale(page_html: Path, message: str) -> bool:
    """Put a visible banner saying why at the top of a rendered page (replacing an earlier one);
    ``False`` when there is no such page.
    """
    if not page_html.exists():
        return False
    import html as _html

    text = page_html.read_text(encoding="utf-8", errors="replace")
    text = re.sub(rf'<div class="{STALE_MARK}".*?</div>\n?', "", text, flags=re.S)
    banner = (f'<div class="{STALE_MARK}" style="background:#fdd;border:2px solid #c00;padding:0.8em;'
              f'margin:0.5em;font-weight:bold">STALE PAGE: {_html.escape(message)}</div>\n')
    m = re.search(r"<body[^>]*>", text)
    text = text[:m.end()] + "\n" + banner + text[m.end():] if m else banner + text
    cache.write_text_atomic(page_html, text)
    return True


# ---------------------------------------------------------------------------------------------------
# Whole book and single chapter
# ---------------------------------------------------------------------------------------------------

def build_book(root: Path, build_dir: Path, profile: str, *, only: list[str] | None = None,
               use_cache: bool = True, do_render: bool = True) -> int:
    """Execute and render the book; return the exit status (0 = everything ok)."""
    config.check_profile(profile)
    pages = read_toc(root)
    chapters = [p for p in pages if p.notebook]
    for p in chapters:
        config.chapter(p.slug)  # every notebook chapter has a spec
    if only:
        valid = [p.slug for p in chapters]
        for name in only:
            if name not in valid:
                raise BuildError(f"unknown chapter {name!r}; valid chapters: {valid}.{config.suggest(name, valid)}")
        chapters = [p for p in chapters if p.slug in only]
    with _lock(build_dir):
        return _build_book(root, build_dir, profile, pages, chapters, only, use_cache, do_render)


def _lock(build_dir: Path):
    """The build folder's lock: a second build into the same folder stops with an error naming the
    holder (:class:`alignment_dynamics.cache.LockedError`, exit status 2)."""
    return cache.exclusive_lock(build_dir / ".build.lock", f"the build folder {build_dir}")


def _build_book(root, build_dir, profile, pages, chapters, only, use_cache, do_render) -> int:
    t_start = time.perf_counter()
    b = Build(root=root, build_dir=build_dir, profile=profile, use_cache=use_cache)
    report: dict[str, Any] = {"profile": profile, "mode": "book", "status": "running", "started_utc": _utc(),
                              "pid": os.getpid(), "chapters": [], "render": None, "versions": b._versions,
                              "machine": hardware.summary()}
    report_path = build_dir / "report.json"
    claims_path = build_dir / "claims.json"
    b.kernel_files = {"ALIGNMENT_DYNAMICS_CLAIMS": str(claims_path), "ALIGNMENT_DYNAMICS_REPORT": str(report_path)}

    def save_report():
        report["chapters"] = [r.as_dict() for r in b.results]
        report["wall_s"] = round(time.perf_counter() - t_start, 3)
        cache.write_json_atomic(report_path, report)

    order = ([p for p in chapters if not config.chapter(p.slug).aggregates]
             + [p for p in chapters if config.chapter(p.slug).aggregates == "claims"]
             + [p for p in chapters if config.chapter(p.slug).aggregates == "report"])
    save_report()
    current = None
    try:
        for i, page in enumerate(order, 1):
            current = page.slug
            spec = config.chapter(page.slug)
            extra = None
            if spec.aggregates == "claims":
                claims = collect_claims(b.results)
                cache.write_json_atomic(claims_path, {"profile": profile, "claims": claims})
                extra = claims
            elif spec.aggregates == "report":
                extra = [(r.name, r.key, r.status) for r in b.results]
            try:
                res = b.execute(page, extra_key=extra, progress=f"[{i}/{len(order)}]")
            except (BuildError, config.ConfigError) as exc:
                res = ChapterResult(page.slug, "failed", False, 0.0, error=str(exc))
                print(f"[{i}/{len(order)}] {page.slug}: FAILED: {exc}", flush=True)
            b.results.append(res)
            save_report()
        current = None

        write_theory_bounds(build_dir, b.results)
        executed = {r.name: Path(r.executed) for r in b.results if r.status == "ok"}
        exec_dir = build_dir / "executed" / profile
        exec_dir.mkdir(parents=True, exist_ok=True)
        for name, path in executed.items():
            with cache.atomic_path(exec_dir / f"{name}.ipynb") as tmp:
                shutil.copyfile(path, tmp)
        failed = [r.name for r in b.results if r.status != "ok"]
        for name in failed:  # never leave a failed chapter's old notebook for `--chapter` builds to show
            (exec_dir / f"{name}.ipynb").unlink(missing_ok=True)
        status = 0 if not failed else 1
        if do_render:
            current = "render"
            stage_dir = build_dir / "stage"
            # a partial book keeps its root page and the plain pages (the bibliography)
            subset = None if not only else [p for p in pages if p.slug in only or p is pages[0] or not p.notebook]
            stage(root, stage_dir, pages if subset is None else subset, executed, toc_subset=subset)
            strict = not only  # the whole book: every Sphinx warning is an error (-n -W)
            ok, wall, log_tail = render(stage_dir, build_dir / "html", strict=strict,
                                        expected=[p.file for p in (subset or pages)])
            report["render"] = {"status": "ok" if ok else "failed", "strict": strict, "wall_s": round(wall, 3),
                                "log_tail": "" if ok else log_tail}
            if ok:
                for r in b.results:
                    if r.status != "ok":
                        page = next(p for p in pages if p.slug == r.name)
                        mark_stale(build_dir / "html" / f"{page.file}.html",
                                   f"this chapter failed to execute in this build ({r.error[:200]}); it is shown "
                                   f"without its results. See {report_path}.")
            else:
                status = 1
            current = None
    except Interrupted as exc:
        report["status"] = "interrupted"
        report["interrupted"] = {"signal": exc.name, "during": current}
        save_report()
        print(f"build ({profile}) interrupted by {exc.name} while {'rendering' if current == 'render' else 'executing chapter ' + repr(current) if current else 'finishing'}; "
              f"report marked 'interrupted': {report_path}. Run it again: finished chapters come from the cache.",
              file=sys.stderr, flush=True)
        return exc.exit_code
    report["status"] = "ok" if status == 0 else "failed"
    report["failed"] = failed
    save_report()
    cache.write_json_atomic(build_dir / "timings.json", timings(report))
    print(f"build ({profile}): {report['status']} in {report['wall_s']:.1f} s; "
          f"{sum(r.cached for r in b.results)} of {len(b.results)} chapters from cache; "
          f"report: {report_path}", flush=True)
    if failed:
        print(f"failed chapters: {failed}; partial notebooks in {build_dir / 'failed'}", flush=True)
    return status


def timings(report: dict[str, Any]) -> dict[str, Any]:
    """The budget view of a build report: per-chapter seconds (and whether each came from the cache),
    the render's seconds, the total, and the machine: CPU, its relevant flags, threads, the auto dtype.
    ``make book`` writes it as ``<build>/timings.json``; ``--timings`` prints it."""
    m = report.get("machine") or {}
    return {
        "profile": report.get("profile"), "status": report.get("status"), "started_utc": report.get("started_utc"),
        "cpu": m.get("cpu"), "cpu_flags": [f for f, on in (m.get("flags") or {}).items() if on],
        "cores": m.get("cores"), "threads": m.get("torch_threads"), "dtype": m.get("auto_dtype"),
        "native_bf16": m.get("native_bf16"),
        "chapters": {c["name"]: {"wall_s": c["wall_s"], "cached": c["cached"], "status": c["status"]}
                     for c in report.get("chapters", [])},
        "render_s": (report.get("render") or {}).get("wall_s"),
        "total_s": report.get("wall_s"),
    }


def collect_claims(results: list[ChapterResult]) -> list[dict[str, str]]:
    import nbformat

    claims = []
    for r in results:
        if r.status == "ok" and r.executed:
            claims.extend(claims_from_notebook(nbformat.read(r.executed, as_version=4)))
    return claims


def _previous_notebooks(build_dir: Path, profile: str, pages: list[Page]) -> dict[str, Path]:
    """The last book build's executed notebooks of ``profile`` that are valid notebooks of their chapter."""
    previous = build_dir / "executed" / profile
    out = {}
    slugs = {p.slug for p in pages if p.notebook}
    for path in sorted(previous.glob("*.ipynb")) if previous.exists() else []:
        if path.stem not in slugs:
            continue
        problem = entry_problem(path, path.stem)
        if problem is None:
            out[path.stem] = path
        else:
            print(f"{path} is corrupt ({problem}); its page is rendered without results", flush=True)
    return out


def write_theory_bounds(build_dir: Path, results: list[ChapterResult]) -> Path:
    """Write ``<build>/theory_bounds.json``: the headline-bound rows of every executed chapter (a list).
    Rows of chapters not executed in this run are kept from the file's previous version."""
    import nbformat

    path = build_dir / "theory_bounds.json"
    fresh = {r.name: bounds_from_notebook(nbformat.read(r.executed, as_version=4))
             for r in results if r.status == "ok" and r.executed}
    try:
        old = json.loads(path.read_text()) if path.exists() else []
    except ValueError:  # a corrupt file: rebuilt from this run's chapters
        print(f"{path} is corrupt; writing it again from this run's chapters", flush=True)
        old = []
    old = old if isinstance(old, list) else []
    rows = [row for row in old if row.get("chapter") not in fresh]
    for name in fresh:
        rows.extend(fresh[name])
    cache.write_json_atomic(path, rows)
    return path


def build_chapter(root: Path, build_dir: Path, name: str, profile: str, overrides: dict[str, Any],
                  use_cache: bool = True) -> int:
    """Re-execute one chapter with overrides into ``<build>/chapters/<name>/`` and render its page.

    The default build stays intact: other pages are taken from the last build of the same profile
    (``<build>/executed/<profile>``) when there is one, else rendered unexecuted. Aggregating chapters
    read only that profile's claims and report.

    While it runs, ``report.json`` says ``running`` (a kill leaves it so, never ``ok``) and the
    previous page carries a "stale" banner; a failed or interrupted run leaves ``failed`` /
    ``interrupted`` and the banner saying so; only a successful render replaces the page.
    """
    config.check_profile(profile)
    pages = read_toc(root)
    chapters = {p.slug: p for p in pages if p.notebook}
    if name not in chapters:
        raise BuildError(f"unknown chapter {name!r}; valid chapters: {sorted(chapters)}.{config.suggest(name, chapters)}")
    with _lock(build_dir):
        return _build_chapter(root, build_dir, name, profile, overrides, use_cache, pages, chapters)


def _build_chapter(root, build_dir, name, profile, overrides, use_cache, pages, chapters) -> int:
    out_dir = build_dir / "chapters" / name
    page = chapters[name]
    page_html = out_dir / "html" / f"{page.file}.html"
    report_path = out_dir / "report.json"
    b = Build(root=root, build_dir=build_dir, profile=profile, overrides=overrides, use_cache=use_cache)
    previous = _previous_notebooks(build_dir, profile, pages)
    spec = config.chapter(name)
    extra = None
    if spec.aggregates == "claims":
        import nbformat

        claims = []
        for p in pages:
            if p.slug in previous and p.slug != name and not config.chapter(p.slug).aggregates:
                claims.extend(claims_from_notebook(nbformat.read(previous[p.slug], as_version=4)))
        claims_path = out_dir / "claims.json"
        cache.write_json_atomic(claims_path, {"profile": profile, "claims": claims})
        b.kernel_files = {"ALIGNMENT_DYNAMICS_CLAIMS": str(claims_path)}
        extra = claims
    elif spec.aggregates == "report":
        book_report = build_dir / "report.json"
        try:
            rep = json.loads(book_report.read_text()) if book_report.exists() else None
        except ValueError:
            rep = None
        own = isinstance(rep, dict) and rep.get("profile") == profile
        b.kernel_files = {"ALIGNMENT_DYNAMICS_REPORT": str(book_report if own else out_dir / "no-report.json")}
        extra = [(c.get("name"), c.get("key"), c.get("status")) for c in rep.get("chapters", [])] if own else "no report"
    nb = load_notebook(page.path)  # the request is checked before anything is marked or run (rc 2)
    b.key_for(page, nb, b.params_for(page, nb), extra)
    report = {"profile": profile, "mode": "chapter", "chapter": name, "overrides": overrides, "status": "running",
              "pid": os.getpid(), "chapters": [], "started_utc": _utc(), "machine": hardware.summary()}
    cache.write_json_atomic(report_path, report)
    mark_stale(page_html, f"a run of {name} with the overrides {overrides} (profile {profile}) started at "
                          f"{report['started_utc']} and has not finished; this page is from an earlier run. "
                          f"See {report_path}.")
    stage_what = "executing"
    try:
        res = b.execute(page, extra_key=extra, progress="[1/1]")
        report["chapters"] = [res.as_dict()]
        if res.status != "ok":
            report["status"] = "failed"
            cache.write_json_atomic(report_path, report)
            mark_stale(page_html, f"the latest run of {name} with the overrides {overrides} FAILED "
                                  f"({res.error[:200]}); this page is from an earlier run. See {report_path}.")
            print(f"chapter {name}: FAILED; report: {report_path}", flush=True)
            return 1
        with cache.atomic_path(out_dir / f"{name}.ipynb") as tmp:
            shutil.copyfile(res.executed, tmp)
        write_theory_bounds(out_dir, [res])  # beside the chapter's page: the default build stays intact
        executed = dict(previous)
        executed[name] = out_dir / f"{name}.ipynb"
        stage_what = "rendering"
        stage(root, out_dir / "stage", pages, executed)
        ok, wall, _ = render(out_dir / "stage", out_dir / "html", strict=False, expected=[page.file])
    except Interrupted as exc:
        report.update(status="interrupted", interrupted={"signal": exc.name, "during": stage_what})
        cache.write_json_atomic(report_path, report)
        mark_stale(page_html, f"the latest run of {name} with the overrides {overrides} was interrupted "
                              f"({exc.name}); this page is from an earlier run.")
        print(f"chapter {name} interrupted by {exc.name} while {stage_what}; report marked 'interrupted': "
              f"{report_path}; the page there, if any, is marked stale", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception as exc:
        report.update(status="failed", error=_short_error(exc))
        cache.write_json_atomic(report_path, report)
        mark_stale(page_html, f"the latest run of {name} with the overrides {overrides} failed ({_short_error(exc)[:200]}); "
                              f"this page is from an earlier run.")
        raise
    report["render"] = {"status": "ok" if ok else "failed", "strict": False, "wall_s": round(wall, 3)}
    report["status"] = "ok" if ok else "failed"
    cache.write_json_atomic(report_path, report)
    if not ok:
        mark_stale(page_html, f"the latest run of {name} with the overrides {overrides} executed but its page "
                              f"failed to render; this page is from an earlier run. See {report_path}.")
    print(f"chapter {name} ({profile}, overrides {overrides}): {report['status']}; page: {page_html}", flush=True)
    return 0 if ok else 1


def describe(root: Path) -> str:
    """A listing of the chapters and their parameters (``--list``)."""
    lines = []
    for page in read_toc(root):
        if not page.notebook:
            continue
        spec = config.chapter(page.slug)
        lines.append(f"{page.slug}")
        lines.append("    PROFILE = 'fast'   # one of " + ", ".join(config.PROFILES))
        for p in spec.params:
            lines.append(f"    {p.name} = {p.values['fast']!r}   # {p.help}")
    return "\n".join(lines)


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m alignment_dynamics.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default=os.environ.get("PROFILE") or config.DEFAULT_PROFILE,
                    help=f"one of {list(config.PROFILES)} (default: fast)")
    ap.add_argument("--chapter", help="re-execute this one chapter with overrides into <build>/chapters/<name>")
    ap.add_argument("--only", help="comma-separated chapters: execute and render only these (a partial book)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a parameter of --chapter (value parsed as papermill -p does: 1e-3 is a "
                         "float, 010 is 10; lists as [a, b])")
    ap.add_argument("--build-dir", default=None, help="build folder (default: <root>/_build)")
    ap.add_argument("--no-cache", action="store_true", help="execute every chapter even if cached")
    ap.add_argument("--no-render", action="store_true", help="execute only")
    ap.add_argument("--list", action="store_true", help="list the chapters and their parameters")
    ap.add_argument("--timings", action="store_true",
                    help="print the last build's per-chapter seconds, CPU, threads and dtype as JSON")
    args = ap.parse_args(argv)
    handlers = {}
    if argv is None:  # the command line: Ctrl-C and SIGTERM mark the report before exiting
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, _on_signal)
    try:
        root = find_root()
        if args.list:
            print(describe(root))
            return 0
        if args.timings:
            where = (Path(args.build_dir).resolve() if args.build_dir else root / "_build") / "report.json"
            if not where.exists():
                raise BuildError(f"no build report at {where}: run `make book` (or pass --build-dir) first")
            print(json.dumps(timings(json.loads(where.read_text())), indent=1))
            return 0
        profile = config.check_profile(args.profile)
        build_dir = Path(args.build_dir).resolve() if args.build_dir else root / "_build"
        overrides = {}
        for name, value in args.parameter:
            if name in overrides:
                raise BuildError(f"-p {name} is given twice ({overrides[name]!r} and {value!r}); give it once")
            overrides[name] = config.parse_value(value)
        if "PROFILE" in overrides:
            raise BuildError("set the profile with --profile (or PROFILE=... for make), not -p PROFILE")
        if args.chapter:
            return build_chapter(root, build_dir, args.chapter, profile, overrides, use_cache=not args.no_cache)
        if overrides:
            raise BuildError("-p overrides apply to one chapter: use --chapter NAME (make chapter NAME=...)")
        only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
        return build_book(root, build_dir, profile, only=only, use_cache=not args.no_cache,
                          do_render=not args.no_render)
    except (BuildError, config.ConfigError, cache.LockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"interrupted by {exc.name} before any chapter ran; nothing was changed", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except OSError as exc:
        disk = cache.disk_error(exc)
        if disk is None:
            traceback.print_exc()
            return 1
        print(f"error: {disk}", file=sys.stderr)
        return 1
    except Exception as exc:  # pragma: no cover - unexpected: show it all
        disk = cache.disk_error(exc)
        if disk is not None:
            print(f"error: {disk}", file=sys.stderr)
            return 1
        traceback.print_exc()
        return 1
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)


if __name__ == "__main__":
    sys.exit(main())


def pinned_versions(root: Path | None = None) -> list[dict[str, str]]:
    """The exact pins of the book environment (``pyproject.toml``, extras ``book`` and ``test``)
    next to the installed versions.
    """
    import re
    import tomllib

    root = root or find_root(Path(__file__).resolve().parent)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    rows = []
    for extra in ("book", "test"):
        for req in project["optional-dependencies"][extra]:
            m = re.match(r"^([A-Za-z0-9_.\-]+)==(.+)$", req)
            if not m:
                raise BuildError(f"pyproject.toml: {extra} extra must pin exactly, got {req!r}")
            name, pin = m.groups()
            try:
                installed = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                installed = "absent"
            rows.append({"package": name, "extra": extra, "pinned": pin, "installed": installed})
    return rows
