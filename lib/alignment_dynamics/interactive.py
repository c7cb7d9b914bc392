"""Interactive figures: the data of a figure as an embedded JSON payload that the book's own script
(``book/_static/ad-interactive.js``, vanilla JavaScript drawing SVG, no third-party library) draws in
the browser, with hover labels, legend toggles and a search box.

Each function takes the arrays or result objects that a chapter already computed (it never trains,
embeds, samples or reads files), checks them, and returns an :class:`Interactive`. Its rich display
(``_repr_html_``) is ``<div class="ad-interactive" data-ad-figure="<kind>">`` holding the payload in a
``<script type="application/json">`` and a fallback note that the script replaces; without JavaScript
the reader sees the note and the static figure that always stands beside an interactive one.

* :func:`embedding_map`: Figure 2's maps, one panel per behaviour; hover shows a statement's text, its
  class and its behaviour; classes and behaviours can be toggled (:func:`maps_figure` reads a result).
* :func:`behaviour_scatter` (and :func:`table_scatter` for per-model tables): one point per behaviour
  in each panel; hover shows the behaviour and its numbers; a search box highlights a behaviour.
* :func:`pair_matrix`: a square matrix over behaviours (the priority gaps); hover shows the pair, its
  value and which behaviour the sign predicts to be learned first.
* :func:`trained_pairs`: the pairs that were trained jointly, each cell the pair's gap, hover also
  saying which behaviour was learned first (:func:`outcomes_matrix` reads a table of joint runs).

Numbers are rounded to :data:`SIG_DIGITS` significant digits and a figure's HTML may not exceed
:data:`MAX_BYTES`, so pages stay small. Text is escaped for HTML by the JSON encoding (``<``, ``>``,
``&`` become ``\\u`` escapes) and shown by the script as text, never as markup.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .validate import InputError, finite_array

__all__ = ["Interactive", "InteractiveError", "SIG_DIGITS", "MAX_BYTES", "KINDS", "embedding_map",
           "behaviour_scatter", "table_scatter", "pair_matrix", "trained_pairs", "outcomes_matrix", "maps_figure"]

#: Significant digits kept for every number of a payload.
SIG_DIGITS = 4
#: The largest HTML one interactive figure may emit (bytes); the book's pages must stay under 10 MB.
MAX_BYTES = 2_000_000
#: The kinds of figure the script draws.
KINDS = ("map", "scatter", "matrix")
#: Class names and colours of the maps (the static figure's POSITIVE and NEGATIVE).
CLASS_NAMES = ("negative", "positive")
CLASS_COLOURS = ("dimgrey", "yellowgreen")
FALLBACK = ("Interactive figure: it needs JavaScript and the book's script (_static/ad-interactive.js). "
            "The static figure above shows the same data.")
CONTENT_NOTE = "Hovering a point shows a persona statement: see the content note at the top of this page."


class InteractiveError(InputError):
    """Data an interactive figure cannot show: wrong shapes, NaN, labels of the wrong length."""


# ---------------------------------------------------------------------------------------------------
# The figure object
# ---------------------------------------------------------------------------------------------------

def _sig(x: float) -> float | None:
    """``x`` rounded to :data:`SIG_DIGITS` significant digits; NaN becomes ``None`` (JSON null)."""
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{SIG_DIGITS}g}")


def _sigs(a: Any) -> list:
    return [_sig(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def _json(payload: Mapping[str, Any]) -> str:
    """Compact JSON that is safe inside a ``<script>`` element (no ``<``, ``>`` or ``&`` left)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


@dataclass(frozen=True)
class Interactive:
    """One interactive figure: its ``kind`` (one of :data:`KINDS`), its JSON ``payload`` and the number
    of marks (points or cells) the script draws, ``n_marks``. Displayed by ``_repr_html_``."""

    kind: str
    payload: dict = field(repr=False)
    n_marks: int

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InteractiveError(f"unknown interactive figure kind {self.kind!r}; valid kinds: {list(KINDS)}")

    def to_json(self) -> str:
        """The payload as embedded in the page."""
        return _json(dict(self.payload, kind=self.kind, marks=self.n_marks))

    def _repr_html_(self) -> str:
        html = (f'<div class="ad-interactive" data-ad-figure="{self.kind}" data-ad-marks="{self.n_marks}">'
                f'<script type="application/json" class="ad-data">{self.to_json()}</script>'
                f'<p class="ad-fallback">{FALLBACK}</p></div>')
        if len(html.encode()) > MAX_BYTES:
            raise InteractiveError(f"the interactive {self.kind} would add {len(html.encode())} bytes to the page, "
                                   f"more than MAX_BYTES = {MAX_BYTES}; show fewer points")
        return html

    @property
    def nbytes(self) -> int:
        """Bytes this figure adds to its page."""
        return len(self._repr_html_().encode())

    def __repr__(self) -> str:
        return f"Interactive({self.kind!r}, {self.n_marks} marks)"


# ---------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------

def _names(name: str, value: Any, n: int | None = None) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence) and not hasattr(value, "__len__"):
        raise InteractiveError(f"{name} must be a sequence of strings, got {type(value).__name__}")
    out = list(value)
    if not all(isinstance(v, str) for v in out):
        bad = next(v for v in out if not isinstance(v, str))
        raise InteractiveError(f"{name} must hold strings, got {bad!r} ({type(bad).__name__})")
    if n is not None and len(out) != n:
        raise InteractiveError(f"{name} has {len(out)} entries but there are {n} points")
    return out


def _unique(name: str, values: list[str]) -> None:
    seen: set[str] = set()
    dup = [v for v in values if v in seen or seen.add(v)]
    if dup:
        raise InteractiveError(f"{name} must be unique, {dup[0]!r} appears twice")


def _vector(name: str, value: Any, n: int, *, allow_nan: bool = False) -> np.ndarray:
    if allow_nan:
        a = np.asarray(value, dtype=np.float64)
        if a.ndim != 1 or np.isinf(a).any():
            raise InteractiveError(f"{name} must be a 1-D array of numbers or NaN (no inf), got shape {a.shape}")
    else:
        a = finite_array(name, value, ndim=1, error=InteractiveError)
    if len(a) != n:
        raise InteractiveError(f"{name} has {len(a)} values but there are {n} points")
    return a


def _text(name: str, value: Any, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InteractiveError(f"{name} must be a string, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------------------
# Figure 2: the maps
# ---------------------------------------------------------------------------------------------------

def embedding_map(coords: Sequence[Any], positive: Sequence[Any], behaviours: Sequence[str],
                  texts: Sequence[Sequence[str]], *, axis_name: str = "UMAP",
                  titles: Sequence[str] | None = None) -> Interactive:
    """The Figure 2 maps: panel ``k`` shows behaviour ``behaviours[k]``'s statements at ``coords[k]``
    (an ``(n_k, 2)`` array), coloured by class (``positive[k]``, booleans), each with its text
    ``texts[k][i]`` shown on hover with its class and behaviour. ``titles`` (default: the behaviour
    names) head the panels. The payload stores the texts once, rounds the coordinates to
    :data:`SIG_DIGITS` digits and carries the page's content note (:data:`CONTENT_NOTE`)."""
    behaviours = _names("behaviours", behaviours)
    if not behaviours:
        raise InteractiveError("embedding_map needs at least one behaviour")
    _unique("behaviours", behaviours)
    k = len(behaviours)
    for name, seq in (("coords", coords), ("positive", positive), ("texts", texts)):
        if len(seq) != k:
            raise InteractiveError(f"{name} has {len(seq)} panels but there are {k} behaviours")
    titles = behaviours if titles is None else _names("titles", titles, k)
    panels, n_total = [], 0
    for b, xy, pos, txt, title in zip(behaviours, coords, positive, texts, titles):
        xy = finite_array(f"coords for {b!r}", xy, ndim=2, error=InteractiveError)
        if xy.shape[1] != 2:
            raise InteractiveError(f"coords for {b!r} must have 2 columns (x, y), got shape {xy.shape}")
        p = np.asarray(pos)
        if p.dtype != bool or p.shape != (len(xy),):
            raise InteractiveError(f"positive for {b!r} must be {len(xy)} booleans, got dtype {p.dtype} "
                                   f"and shape {p.shape}")
        txt = _names(f"texts for {b!r}", txt, len(xy))
        panels.append({"behaviour": b, "title": title, "x": _sigs(xy[:, 0]), "y": _sigs(xy[:, 1]),
                       "cls": p.astype(int).tolist(), "text": txt})
        n_total += len(xy)
    payload = {"axis": _text("axis_name", axis_name, optional=False), "classes": list(CLASS_NAMES),
               "colours": list(CLASS_COLOURS), "panels": panels, "note": CONTENT_NOTE}
    return Interactive("map", payload, n_total)


# ---------------------------------------------------------------------------------------------------
# All-behaviour scatters
# ---------------------------------------------------------------------------------------------------

def behaviour_scatter(names: Sequence[str], panels: Sequence[Mapping[str, Any]], *,
                      colour_by: Any = None, extra: Mapping[str, Any] | None = None,
                      title: str | None = None) -> Interactive:
    """One point per behaviour in each panel: ``panels`` are mappings with ``x`` and ``y`` (one value
    per name; NaN leaves the point out) and optional ``xlabel``, ``ylabel``, ``title`` and ``extra``.
    Points are coloured by the rank of ``colour_by`` (one value per name, e.g. distinguishability) on
    the plasma map, purple lowest, as the static figures; ``extra`` (name to one value per behaviour)
    adds numbers to the hover label, in every panel, and a panel's own ``extra`` to that panel's. The
    search box of the page highlights a behaviour by name in every panel."""
    names = _names("names", names)
    if not names:
        raise InteractiveError("behaviour_scatter needs at least one behaviour")
    _unique("names", names)
    n = len(names)
    if isinstance(panels, Mapping) or not panels:
        raise InteractiveError("panels must be a non-empty sequence of mappings with 'x' and 'y'")
    out, marks = [], 0
    for k, p in enumerate(panels):
        if not isinstance(p, Mapping) or "x" not in p or "y" not in p:
            raise InteractiveError(f"panel {k} must be a mapping with 'x' and 'y', got {p!r:.80}")
        unknown = set(p) - {"x", "y", "xlabel", "ylabel", "title", "extra"}
        if unknown:
            raise InteractiveError(f"panel {k} has unknown keys {sorted(unknown)}; "
                                   "valid: x, y, xlabel, ylabel, title, extra")
        x = _vector(f"panel {k} x", p["x"], n, allow_nan=True)
        y = _vector(f"panel {k} y", p["y"], n, allow_nan=True)
        shown = np.isfinite(x) & np.isfinite(y)
        if not shown.any():
            raise InteractiveError(f"panel {k} has no point with finite x and y")
        out.append({"x": _sigs(x), "y": _sigs(y), "xlabel": _text("xlabel", p.get("xlabel", "")),
                    "ylabel": _text("ylabel", p.get("ylabel", "")), "title": _text("title", p.get("title", "")),
                    "extra": _extra(dict(extra or {}, **(p.get("extra") or {})), n)})
        marks += int(shown.sum())
    payload: dict[str, Any] = {"names": names, "panels": out, "title": _text("title", title) or ""}
    if colour_by is not None:
        c = _vector("colour_by", colour_by, n, allow_nan=True)
        payload["colours"] = _rank_colours(c)
    return Interactive("scatter", payload, marks)


def _extra(extra: Mapping[str, Any], n: int) -> dict[str, list]:
    return {_text("extra key", key, optional=False): _sigs(_vector(f"extra[{key!r}]", v, n, allow_nan=True))
            for key, v in extra.items()}


def _rank_colours(values: np.ndarray) -> list[str | None]:
    """Hex colours on plasma (cut at 0.9, as :func:`plotting.ordered_colors`) by the rank of ``values``;
    NaN gets ``None`` (the script's grey)."""
    import matplotlib as mpl

    ok = np.isfinite(values)
    cols: list[str | None] = [None] * len(values)
    order = np.argsort(np.where(ok, values, np.inf), kind="stable")[: int(ok.sum())]
    cmap = mpl.colormaps["plasma"]
    for r, i in enumerate(order):
        cols[i] = mpl.colors.to_hex(cmap(0.9 * r / max(len(order) - 1, 1)))
    return cols


def table_scatter(tables: Mapping[str, Any], x: str, ys: Mapping[str, str], *, xlabel: str | None = None,
                  colour_by: str | None = None, extra: Sequence[str] = ()) -> Interactive:
    """:func:`behaviour_scatter` of per-model tables (DataFrames indexed by behaviour): one row of
    panels per model (``tables``: model name to table), one panel per column of ``ys`` (column name to
    axis label) against column ``x``. All tables must hold the same behaviours (the first's order is
    kept). ``colour_by`` (default ``x``) colours by the first table's ranks; ``extra`` columns of each
    table join the hover labels of its panels."""
    if not isinstance(tables, Mapping) or not tables:
        raise InteractiveError("tables must be a non-empty mapping of model name to DataFrame")
    if not isinstance(ys, Mapping) or not ys:
        raise InteractiveError("ys must be a non-empty mapping of column name to axis label")
    first = next(iter(tables.values()))
    names = [str(b) for b in first.index]
    panels = []
    for model, t in tables.items():
        missing = [c for c in (x, *ys, *extra) if c not in t.columns]
        if missing:
            raise InteractiveError(f"the table of {model!r} has no column(s) {missing}; it has {list(t.columns)}")
        if sorted(map(str, t.index)) != sorted(names):
            raise InteractiveError(f"the table of {model!r} holds other behaviours than the first table")
        t = t.loc[list(first.index)]
        for col, label in ys.items():
            panels.append({"x": t[x].to_numpy(dtype=float), "y": t[col].to_numpy(dtype=float),
                           "xlabel": xlabel or x, "ylabel": label, "title": str(model),
                           "extra": {c: t[c].to_numpy(dtype=float) for c in extra}})
    colour = first[colour_by or x].to_numpy(dtype=float)
    return behaviour_scatter(names, panels, colour_by=colour)


# ---------------------------------------------------------------------------------------------------
# Matrices over pairs of behaviours
# ---------------------------------------------------------------------------------------------------

def _order(n: int, order_by: Any) -> np.ndarray:
    if order_by is None:
        return np.arange(n)
    v = _vector("order_by", order_by, n)
    return np.argsort(v, kind="stable")


def pair_matrix(values: Any, names: Sequence[str], *, order_by: Any = None, value_label: str = "priority gap",
                marks: Mapping[str, Sequence[str]] | None = None, title: str | None = None) -> Interactive:
    """An ``(n, n)`` matrix over behaviours (``values[i, j]``: the priority gap of ``names[i]`` over
    ``names[j]``; NaN cells are left empty), rows and columns sorted by ``order_by`` (least first; e.g.
    distinguishability). Hover shows the pair, its value (``value_label``) and the behaviour that the
    sign predicts to be learned first (positive: the row's). ``marks`` (label to a pair of names) ring
    cells, as the static heatmap does."""
    names = _names("names", names)
    _unique("names", names)
    n = len(names)
    if n < 2:
        raise InteractiveError(f"pair_matrix needs at least two behaviours, got {n}")
    m = np.asarray(values, dtype=np.float64)
    if m.shape != (n, n):
        raise InteractiveError(f"values must be a ({n}, {n}) matrix for {n} names, got shape {m.shape}")
    if np.isinf(m).any():
        raise InteractiveError("values has inf entries; leave undefined cells NaN")
    order = _order(n, order_by)
    m = m[np.ix_(order, order)]
    if not np.isfinite(m).any():
        raise InteractiveError("values has no finite entry to show")
    pos = {names[i]: r for r, i in enumerate(order)}
    ringed = []
    for label, pair in (marks or {}).items():
        a, b = _names(f"marks[{label!r}]", pair, 2)
        for name in (a, b):
            if name not in pos:
                raise InteractiveError(f"marks[{label!r}] names {name!r}, which is not among the names")
        ringed.append([pos[a], pos[b], _text("mark label", label, optional=False)])
    payload = {"names": [names[i] for i in order], "values": _sigs(m), "label": value_label,
               "first": "sign", "rings": ringed, "title": _text("title", title) or ""}
    return Interactive("matrix", payload, int(np.isfinite(m).sum()))


def trained_pairs(members: Sequence[Sequence[str]], gaps: Any, gains: Any, names: Sequence[str], *,
                  order_by: Any = None, gain_label: str = "loss drop", title: str | None = None) -> Interactive:
    """The pairs trained jointly, as a matrix over ``names``: pair ``k`` is ``members[k]`` (two names),
    ``gaps[k]`` the priority gap of its first over its second behaviour, ``gains[k]`` the two measured
    gains (e.g. loss drops, first then second). Cell (i, j) holds the gap of i over j (the mirror cell
    the opposite sign); hover shows the pair, the gap, the behaviour predicted to be learned first and
    the one that was (the larger gain; a tie names neither). Pairs trained twice are refused.
    ``prioritization``'s ``outcomes`` table gives ``members``, ``gap`` and ``gains_loss``."""
    names = _names("names", names)
    _unique("names", names)
    n = len(names)
    members = [tuple(_names(f"members[{k}]", p, 2)) for k, p in enumerate(members)]
    if not members:
        raise InteractiveError("trained_pairs needs at least one pair")
    g = _vector("gaps", gaps, len(members))
    gains = finite_array("gains", np.asarray([np.asarray(v, dtype=np.float64) for v in gains]),
                         ndim=2, error=InteractiveError)
    if gains.shape != (len(members), 2):
        raise InteractiveError(f"gains must hold two values per pair, shape ({len(members)}, 2), got {gains.shape}")
    order = _order(n, order_by)
    pos = {names[i]: r for r, i in enumerate(order)}
    cells, seen = [], set()
    for (a, b), gap, (ga, gb) in zip(members, g, gains):
        for name in (a, b):
            if name not in pos:
                raise InteractiveError(f"the pair ({a!r}, {b!r}) names {name!r}, which is not among the names")
        if a == b:
            raise InteractiveError(f"the pair ({a!r}, {b!r}) repeats one behaviour")
        key = frozenset((a, b))
        if key in seen:
            raise InteractiveError(f"the pair ({a!r}, {b!r}) appears twice")
        seen.add(key)
        first = None if ga == gb else (0 if ga > gb else 1)
        cells.append([pos[a], pos[b], _sig(gap), first, _sig(ga), _sig(gb)])
        cells.append([pos[b], pos[a], _sig(-gap), None if first is None else 1 - first, _sig(gb), _sig(ga)])
    payload = {"names": [names[i] for i in order], "cells": cells, "label": "priority gap",
               "gain": _text("gain_label", gain_label, optional=False), "first": "measured", "rings": [],
               "title": _text("title", title) or ""}
    return Interactive("matrix", payload, len(cells))


def outcomes_matrix(outcomes: Any, *, metric: str = "loss", title: str | None = None) -> Interactive:
    """:func:`trained_pairs` of a table of joint two-behaviour runs (``prioritization``'s outcomes:
    columns ``members``, ``gap``, ``gains_<metric>`` and ``distinguishability``, one row per pair). The
    behaviours are those the pairs name, sorted by their distinguishability (least first)."""
    gain_col = f"gains_{metric}"
    cols = getattr(outcomes, "columns", None)
    missing = [c for c in ("members", "gap", gain_col, "distinguishability") if cols is None or c not in cols]
    if missing:
        raise InteractiveError(f"outcomes must be a table with columns members, gap, {gain_col} and "
                               f"distinguishability; missing {missing}")
    level: dict[str, float] = {}
    for members, dist in zip(outcomes["members"], outcomes["distinguishability"]):
        if len(members) != 2 or len(dist) != 2:
            raise InteractiveError(f"outcomes_matrix shows pairs; got a group of {len(members)}: {members!r}")
        for b, d in zip(members, dist):
            level.setdefault(str(b), float(d))
    names = list(level)
    labels = {"loss": "loss drop", "accuracy": "accuracy gain"}
    return trained_pairs(list(outcomes["members"]), outcomes["gap"].to_numpy(dtype=float),
                         list(outcomes[gain_col]), names, order_by=[level[b] for b in names],
                         gain_label=labels.get(metric, metric), title=title)


def maps_figure(maps: Any, *, axis_name: str = "UMAP") -> Interactive:
    """:func:`embedding_map` of a Figure 2 result: an object with ``picked`` (the behaviours),
    ``maps`` (their 2-D coordinates), ``masks`` (positive statements) and ``texts`` (each map's
    statements, in its rows' order), and optionally ``titles``; the same arrays the static figure draws."""
    missing = [f for f in ("picked", "maps", "masks", "texts") if not hasattr(maps, f)]
    if missing:
        raise InteractiveError(f"maps_figure needs a result with picked, maps, masks and texts; missing {missing}")
    titles = getattr(maps, "titles", None)
    return embedding_map(maps.maps, maps.masks, maps.picked, maps.texts, axis_name=axis_name,
                         titles=None if titles is None else [str(t).split("\n")[0] for t in titles])
