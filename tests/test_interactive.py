"""The interactive figures' data (lib/alignment_dynamics/interactive.py): payload contents, rounding,
escaping, validation errors and sizes. tests/test_browser.py checks that the script draws them."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from alignment_dynamics import interactive as ia


def _payload(fig: ia.Interactive) -> dict:
    html = fig._repr_html_()
    m = re.search(r'<script type="application/json" class="ad-data">(.*?)</script>', html, re.S)
    assert m, html[:200]
    return json.loads(m.group(1))


def _map(n=(3, 4), texts=None):
    rng = np.random.default_rng(0)
    coords = [rng.normal(size=(k, 2)) for k in n]
    positive = [np.arange(k) % 2 == 0 for k in n]
    texts = texts or [[f"statement {b}-{i}" for i in range(k)] for b, k in enumerate(n)]
    return coords, positive, [f"behaviour-{b}" for b in range(len(n))], texts


# --- the figure object ------------------------------------------------------------------------------

def test_html_carries_kind_marks_data_and_fallback():
    fig = ia.embedding_map(*_map())
    html = fig._repr_html_()
    assert html.startswith('<div class="ad-interactive" data-ad-figure="map" data-ad-marks="7">')
    assert 'class="ad-fallback"' in html and "needs JavaScript" in html
    d = _payload(fig)
    assert d["kind"] == "map" and d["marks"] == 7 == fig.n_marks
    assert fig.nbytes == len(html.encode())


def test_unknown_kind_is_refused():
    with pytest.raises(ia.InteractiveError, match="valid kinds"):
        ia.Interactive("pie", {}, 0)


def test_numbers_keep_four_significant_digits():
    assert ia._sig(0.123456789) == 0.1235
    assert ia._sig(123456.0) == 123500.0
    assert ia._sig(-1.23456e-7) == -1.235e-07
    assert ia._sig(float("nan")) is None
    fig = ia.behaviour_scatter(["a", "b"], [{"x": [1 / 3, 2 / 3], "y": [np.pi, np.nan]}])
    d = _payload(fig)
    assert d["panels"][0]["x"] == [0.3333, 0.6667]
    assert d["panels"][0]["y"] == [3.142, None]
    assert fig.n_marks == 1  # the NaN point is not drawn


def test_text_is_escaped_for_html_and_survives_the_round_trip():
    evil = ['</script><img src=x onerror=alert(1)> & "quotes"', "plain"]
    coords, positive, names, _ = _map(n=(2,))
    fig = ia.embedding_map(coords, positive, names, [evil])
    html = fig._repr_html_()
    body = html.split('class="ad-data">', 1)[1].rsplit("</script>", 1)[0]
    assert "<" not in body and ">" not in body and "&" not in body
    assert html.count("</script>") == 1
    assert _payload(fig)["panels"][0]["text"] == evil


def test_a_page_stays_small():
    coords, positive, names, texts = _map(n=(400, 400, 400), texts=[["x" * 120] * 400] * 3)
    fig = ia.embedding_map(coords, positive, names, texts)
    assert fig.nbytes < 250_000  # 1200 statements of 120 characters, four-digit coordinates
    big = ia.behaviour_scatter([f"b{i}" for i in range(150_000)], [{"x": np.arange(150_000.0) + 0.123456,
                                                                    "y": np.arange(150_000.0) + 0.654321}])
    with pytest.raises(ia.InteractiveError, match="MAX_BYTES"):
        big._repr_html_()


# --- maps -------------------------------------------------------------------------------------------

def test_embedding_map_payload():
    coords, positive, names, texts = _map()
    d = _payload(ia.embedding_map(coords, positive, names, texts, axis_name="PCA"))
    assert d["axis"] == "PCA" and d["classes"] == ["negative", "positive"]
    assert [p["behaviour"] for p in d["panels"]] == names
    p1 = d["panels"][1]
    assert p1["cls"] == [1, 0, 1, 0] and p1["text"] == texts[1]
    np.testing.assert_allclose(p1["x"], coords[1][:, 0], rtol=5e-4)
    np.testing.assert_allclose(p1["y"], coords[1][:, 1], rtol=5e-4)
    assert "content note" in d["note"]


@pytest.mark.parametrize("change, match", [
    (lambda c, p, n, t: (c[:1], p, n, t), "coords has 1 panels but there are 2"),
    (lambda c, p, n, t: ([c[0][:, :1], c[1]], p, n, t), "2 columns"),
    (lambda c, p, n, t: ([np.full((3, 2), np.nan), c[1]], p, n, t), "non-finite"),
    (lambda c, p, n, t: (c, [p[0].astype(int), p[1]], n, t), "booleans"),
    (lambda c, p, n, t: (c, p, n, [t[0][:2], t[1]]), "texts for 'behaviour-0' has 2 entries but there are 3"),
    (lambda c, p, n, t: (c, p, ["x", "x"], t), "unique"),
    (lambda c, p, n, t: (c, p, n, [[1, 2, 3], t[1]]), "strings"),
])
def test_embedding_map_refuses_bad_input(change, match):
    with pytest.raises(ia.InteractiveError, match=match):
        ia.embedding_map(*change(*_map()))


# --- scatters ---------------------------------------------------------------------------------------

def test_behaviour_scatter_colours_by_rank_and_carries_extra_numbers():
    names = ["low", "high", "mid"]
    fig = ia.behaviour_scatter(names, [{"x": [0.1, 0.9, 0.5], "y": [1, 2, 3], "xlabel": "d", "title": "m"}],
                               colour_by=[0.1, 0.9, 0.5], extra={"rank": [1, 3, 2]})
    d = _payload(fig)
    assert d["names"] == names and d["panels"][0]["extra"] == {"rank": [1, 3, 2]}
    assert d["colours"][0] == "#0d0887"  # plasma(0): purple, the least
    assert d["colours"][1] != d["colours"][2] != d["colours"][0]
    assert fig.n_marks == 3


def test_table_scatter_makes_one_row_of_panels_per_model():
    idx = ["a", "b", "c"]
    t1 = pd.DataFrame({"distinguishability": [1.0, 2.0, 3.0], "slope": [0.1, 0.2, 0.3], "drop": [5, 6, 7]}, index=idx)
    t2 = t1.iloc[::-1] * 10  # another order: aligned by name
    fig = ia.table_scatter({"m1": t1, "m2": t2}, "distinguishability", {"slope": "slope", "drop": "loss drop"},
                           extra=["drop"])
    d = _payload(fig)
    assert d["panels"][0]["extra"] == {"drop": [5, 6, 7]} and d["panels"][2]["extra"] == {"drop": [50, 60, 70]}
    assert [p["title"] for p in d["panels"]] == ["m1", "m1", "m2", "m2"]
    assert d["panels"][2]["x"] == [10.0, 20.0, 30.0] and d["panels"][3]["ylabel"] == "loss drop"
    assert fig.n_marks == 12
    with pytest.raises(ia.InteractiveError, match="no column"):
        ia.table_scatter({"m1": t1}, "distinguishability", {"nope": "y"})
    with pytest.raises(ia.InteractiveError, match="other behaviours"):
        ia.table_scatter({"m1": t1, "m2": t2.iloc[:2]}, "distinguishability", {"slope": "y"})


@pytest.mark.parametrize("names, panels, match", [
    (["a", "b"], [{"x": [1, 2, 3], "y": [1, 2]}], "panel 0 x has 3 values but there are 2"),
    (["a", "b"], [{"x": [1, np.inf], "y": [1, 2]}], "no inf"),
    (["a", "b"], [{"x": [np.nan, np.nan], "y": [1, 2]}], "no point"),
    (["a", "b"], [{"x": [1, 2]}], "'x' and 'y'"),
    (["a", "b"], [{"x": [1, 2], "y": [1, 2], "colour": "red"}], "unknown keys"),
    (["a", "a"], [{"x": [1, 2], "y": [1, 2]}], "unique"),
    ([], [{"x": [], "y": []}], "at least one"),
])
def test_behaviour_scatter_refuses_bad_input(names, panels, match):
    with pytest.raises(ia.InteractiveError, match=match):
        ia.behaviour_scatter(names, panels)


# --- matrices ---------------------------------------------------------------------------------------

def test_pair_matrix_sorts_and_leaves_nan_cells_empty():
    names = ["b", "c", "a"]
    g = np.array([[np.nan, 0.5, -0.25], [-0.5, np.nan, 0.125], [0.25, -0.125, np.nan]])
    fig = ia.pair_matrix(g, names, order_by=[2.0, 3.0, 1.0], marks={"(a)": ("a", "c")})
    d = _payload(fig)
    assert d["names"] == ["a", "b", "c"]
    v = np.array([np.nan if x is None else x for x in d["values"]]).reshape(3, 3)
    np.testing.assert_array_equal(v, g[np.ix_([2, 0, 1], [2, 0, 1])])
    assert d["rings"] == [[0, 2, "(a)"]]
    assert fig.n_marks == 6 and d["first"] == "sign"


@pytest.mark.parametrize("values, names, kw, match", [
    (np.zeros((2, 3)), ["a", "b"], {}, r"\(2, 2\) matrix"),
    (np.full((2, 2), np.inf), ["a", "b"], {}, "inf"),
    (np.full((2, 2), np.nan), ["a", "b"], {}, "no finite"),
    (np.zeros((1, 1)), ["a"], {}, "at least two"),
    (np.zeros((2, 2)), ["a", "b"], {"marks": {"x": ("a", "z")}}, "'z'"),
    (np.zeros((2, 2)), ["a", "b"], {"order_by": [1.0]}, "order_by has 1 values"),
])
def test_pair_matrix_refuses_bad_input(values, names, kw, match):
    with pytest.raises(ia.InteractiveError, match=match):
        ia.pair_matrix(values, names, **kw)


def test_trained_pairs_mirror_the_gap_and_name_who_was_learned_first():
    names = ["a", "b", "c"]
    fig = ia.trained_pairs([("a", "b"), ("c", "a")], [0.5, -0.2], [(0.1, 0.3), (0.2, 0.2)], names,
                           order_by=[3.0, 2.0, 1.0])
    d = _payload(fig)
    assert d["names"] == ["c", "b", "a"] and d["first"] == "measured" and fig.n_marks == 4
    cells = {(r, c): rest for r, c, *rest in d["cells"]}
    # (a over b): row a = 2, column b = 1; b's loss fell more, so the column was learned first
    assert cells[2, 1] == [0.5, 1, 0.1, 0.3]
    assert cells[1, 2] == [-0.5, 0, 0.3, 0.1]
    assert cells[0, 2] == [-0.2, None, 0.2, 0.2]  # a tie names neither


@pytest.mark.parametrize("members, gaps, gains, match", [
    ([("a", "b"), ("b", "a")], [0.1, 0.2], [(0, 1), (0, 1)], "appears twice"),
    ([("a", "a")], [0.1], [(0, 1)], "repeats"),
    ([("a", "z")], [0.1], [(0, 1)], "'z'"),
    ([("a", "b")], [0.1, 0.2], [(0, 1)], "gaps has 2 values"),
    ([("a", "b")], [0.1], [(0, 1, 2)], "two values per pair"),
    ([("a", "b")], [np.nan], [(0, 1)], "non-finite"),
    ([], [], [], "at least one"),
])
def test_trained_pairs_refuses_bad_input(members, gaps, gains, match):
    with pytest.raises(ia.InteractiveError, match=match):
        ia.trained_pairs(members, gaps, gains, ["a", "b", "c"])


# --- the Sphinx hook that loads the script only where a figure is --------------------------------------

@pytest.mark.parametrize("body, kept", [('<div data-ad-figure="map">', 1), ("<p>no figure</p>", 0)])
def test_the_script_is_kept_once_and_only_on_pages_with_a_figure(body, kept):
    from alignment_dynamics import sphinx_ext

    ctx = {"body": body, "script_files": ["_static/doctools.js", "_static/ad-interactive.js",
                                          "_static/ad-interactive.js"]}
    sphinx_ext._interactive_only_where_used(None, "p", "page.html", ctx, None)
    assert ctx["script_files"][0] == "_static/doctools.js"
    assert sum(s.endswith("ad-interactive.js") for s in ctx["script_files"]) == kept


def test_outcomes_matrix_reads_a_table_of_joint_runs():
    t = pd.DataFrame({"members": [("a", "b"), ("c", "a")], "gap": [0.5, -0.2],
                      "gains_loss": [np.array([0.1, 0.3]), np.array([0.25, 0.2])],
                      "distinguishability": [np.array([3.0, 2.0]), np.array([1.0, 3.0])]})
    d = _payload(ia.outcomes_matrix(t))
    assert d["names"] == ["c", "b", "a"] and d["gain"] == "loss drop"
    cells = {(r, c): rest for r, c, *rest in d["cells"]}
    assert cells[0, 2] == [-0.2, 0, 0.25, 0.2]  # c over a: c's loss fell more
    with pytest.raises(ia.InteractiveError, match="missing"):
        ia.outcomes_matrix(t.drop(columns="gap"))
    with pytest.raises(ia.InteractiveError, match="group of 3"):
        ia.outcomes_matrix(t.assign(members=[("a", "b", "c"), ("c", "a")]))


def test_maps_figure_reads_a_figure2_result():
    from types import SimpleNamespace

    coords, positive, names, texts = _map()
    res = SimpleNamespace(picked=names, maps=coords, masks=positive, texts=texts,
                          titles=[f"{b}\nd′ = 1.00" for b in names])
    d = _payload(ia.maps_figure(res, axis_name="PCA"))
    assert [p["behaviour"] for p in d["panels"]] == names and d["axis"] == "PCA"
    assert d["panels"][0]["title"] == names[0] and d["panels"][1]["text"] == texts[1]
    with pytest.raises(ia.InteractiveError, match="missing \\['texts'\\]"):
        ia.maps_figure(SimpleNamespace(picked=names, maps=coords, masks=positive))


def test_the_staged_book_serves_the_script_from_its_static_folder(root, tmp_path):
    """The staged build copies ``book/_static`` and its configuration points Sphinx at it, so the
    rendered ``html/_static`` holds the script (tests/test_browser.py checks the rendered book)."""
    import yaml

    from alignment_dynamics import build

    build.stage(root, tmp_path / "stage", [], {})
    cfg = yaml.safe_load((tmp_path / "stage" / "_config.yml").read_text())["sphinx"]["config"]
    assert "ad-interactive.js" in cfg["html_js_files"]
    static = [tmp_path / "stage" / p for p in cfg["html_static_path"]]
    assert any((p / "ad-interactive.js").read_bytes() == (root / "book" / "_static" / "ad-interactive.js").read_bytes()
               for p in static if (p / "ad-interactive.js").is_file())
    js = (root / "book" / "_static" / "ad-interactive.js").read_text()
    assert "http://" not in js.replace("http://www.w3.org/2000/svg", "") and "https://" not in js  # nothing remote
