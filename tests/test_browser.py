"""Open every page of the rendered smoke book in headless Chromium and fail on console errors, broken
images, broken links inside the book, unrendered math, or anything loaded from the internet; check that
every interactive figure draws its points or cells and shows a label on hover, and that its script is
loaded once on the pages that have one. ``test_interactive_figures_draw_on_a_small_page`` checks the
same on a page of library payloads, without a book build."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.book

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("id", "name") and v:
                self.ids.add(v)


def _ids(path: Path, memo: dict) -> set[str]:
    if path not in memo:
        p = _Ids()
        p.feed(path.read_text(errors="replace"))
        memo[path] = p.ids
    return memo[path]


@pytest.fixture(scope="module")
def driver():
    assert CHROMIUM and CHROMEDRIVER, (
        "the browser check needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver "
        "(.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1300,1000", "--allow-file-access-from-files",
                f"--user-data-dir={tempfile.mkdtemp(prefix='ad-chromium-')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    d.set_script_timeout(90)
    yield d
    d.quit()


def _pages(html_dir: Path) -> list[Path]:
    return sorted(html_dir.glob("book/*.html")) + [html_dir / "genindex.html"]


_WAIT_MATHJAX = """
const done = arguments[arguments.length - 1];
const t0 = Date.now();
(function poll() {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => done(true)).catch(e => done("mathjax error: " + e));
  } else if (!document.querySelector('script[src*="mathjax"]')) {
    done("no MathJax script on the page");
  } else if (Date.now() - t0 > 45000) {
    done("MathJax did not start within 45 s");
  } else { setTimeout(poll, 100); }
})();
"""

_MATH_STATE = """
const raw = [];
document.querySelectorAll('span.math, div.math').forEach(el => {
  if (!el.querySelector('mjx-container')) raw.push(el.textContent.slice(0, 80));
});
const walker = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
const leftovers = [];
while (walker.nextNode()) {
  const n = walker.currentNode;
  if (n.parentElement.closest('pre, code, script, style, mjx-container, textarea, .highlight')) continue;
  if (/\\\\\\(|\\\\\\[|\\$\\$/.test(n.textContent)) leftovers.push(n.textContent.slice(0, 80));
}
return {
  containers: document.querySelectorAll('mjx-container').length,
  errors: Array.from(document.querySelectorAll('mjx-merror')).map(e => e.textContent.slice(0, 80)),
  unrendered: raw, leftovers: leftovers,
};
"""

_IMAGES = """
return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
"""

_LINKS = "return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);"
_REMOTE = """
return Array.from(document.querySelectorAll('script[src], link[href], img[src]'))
  .map(e => e.src || e.href).filter(u => /^https?:/.test(u));
"""


# The interactive figures (lib/alignment_dynamics/interactive.py, book/_static/ad-interactive.js)
_INTERACTIVE = """
return Array.from(document.querySelectorAll('div[data-ad-figure]')).map(d => ({
  kind: d.getAttribute('data-ad-figure'), ready: d.getAttribute('data-ad-ready'),
  expected: +d.getAttribute('data-ad-marks'), drawn: d.querySelectorAll('svg .ad-mark').length,
  fallback: d.querySelectorAll('.ad-fallback').length}));
"""
_SCRIPTS = "return Array.from(document.querySelectorAll('script[src*=\"ad-interactive\"]')).map(s => s.src);"
_TIP = """
const fig = document.querySelectorAll('div[data-ad-figure]')[arguments[0]];
const tip = fig.querySelector('.ad-tip');
return tip && getComputedStyle(tip).display !== 'none' ? tip.textContent : null;
"""


MAX_PAGE_BYTES = 10_000_000  # issue 17: no page over 10 MB
_WEIGHT = """
const local = u => u && u.startsWith('file:');
return Array.from(document.querySelectorAll('img[src], script[src]')).map(e => e.src).filter(local);
"""


def _page_bytes(page: Path, assets: list[str]) -> int:
    """The page's HTML plus the local images and scripts it loads (each counted once)."""
    files = {Path(unquote(urlparse(u).path)) for u in assets}
    return page.stat().st_size + sum(f.stat().st_size for f in files if f.is_file())


def _check_interactive(driver) -> list[str]:
    """Each interactive figure on the open page draws as many marks as its data holds, and hovering its
    first mark shows a label; returns the problems found."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    found = []
    figures = driver.execute_script(_INTERACTIVE)
    for k, f in enumerate(figures):
        if f["ready"] != "1" or f["fallback"]:
            found.append(f"interactive {f['kind']} #{k} did not draw (ready={f['ready']})")
            continue
        if f["drawn"] != f["expected"] or f["expected"] < 1:
            found.append(f"interactive {f['kind']} #{k} drew {f['drawn']} marks, its data hold {f['expected']}")
            continue
        fig = driver.find_elements(By.CSS_SELECTOR, "div[data-ad-figure]")[k]
        mark = fig.find_element(By.CSS_SELECTOR, "svg .ad-mark")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", mark)
        ActionChains(driver).move_to_element(mark).perform()
        label = driver.execute_script(_TIP, k)
        if not label or not label.strip():
            found.append(f"interactive {f['kind']} #{k}: hovering a mark shows no label")
    return found


def test_every_page_renders_cleanly_in_a_browser(smoke_build, driver):
    html_dir = smoke_build / "html"
    pages = _pages(html_dir)
    assert len(pages) >= 3
    problems: dict[str, list] = {}
    memo: dict = {}
    math_pages = interactive_pages = 0
    for page in pages:
        found: list = []
        for _attempt in range(2):  # a cold browser on a busy 2-core machine may miss the first window
            driver.get(page.as_uri())
            ready = driver.execute_async_script(_WAIT_MATHJAX)
            if ready is True:
                break
        has_math = driver.execute_script("return document.querySelectorAll('.math').length") > 0
        if has_math and ready is not True:
            found.append(f"the page has math but MathJax did not load: {ready}")
        for entry in driver.get_log("browser"):
            if entry["level"] == "SEVERE":
                found.append(f"console: {entry['message'][:200]}")
        if ready is True:
            state = driver.execute_script(_MATH_STATE)
            math_pages += state["containers"] > 0
            if state["errors"]:
                found.append(f"math errors: {state['errors']}")
            if state["unrendered"]:
                found.append(f"unrendered math: {state['unrendered'][:3]}")
            if state["leftovers"]:
                found.append(f"raw TeX in text: {state['leftovers'][:3]}")
        broken = driver.execute_script(_IMAGES)
        if broken:
            found.append(f"broken images: {broken}")
        scripts = driver.execute_script(_SCRIPTS)
        n_figures = len(driver.execute_script(_INTERACTIVE))
        if len(scripts) != (1 if n_figures else 0):
            found.append(f"{n_figures} interactive figures but the script is included {len(scripts)} times")
        found += _check_interactive(driver)
        weight = _page_bytes(page, driver.execute_script(_WEIGHT))
        if weight > MAX_PAGE_BYTES:
            found.append(f"the page weighs {weight / 1e6:.1f} MB with its images and scripts, over 10 MB")
        interactive_pages += n_figures > 0
        remote = driver.execute_script(_REMOTE)
        if remote:
            found.append(f"loads from the internet: {remote[:5]}")
        for href in driver.execute_script(_LINKS):
            url = urlparse(href)
            if url.scheme != "file":
                continue
            target = Path(unquote(url.path))
            if not target.exists():
                found.append(f"broken link: {href}")
            elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in _ids(target, memo):
                found.append(f"broken anchor: {href}")
        if found:
            problems[str(page.relative_to(html_dir))] = found
    assert not problems, json.dumps(problems, indent=1)
    assert math_pages >= 1, "no page rendered any math: is MathJax served offline?"
    assert interactive_pages >= 1, "no page has an interactive figure"
    assert (html_dir / "_static" / "ad-interactive.js").is_file(), "the script is not served from _static"


def test_mathjax_is_bundled_not_fetched(smoke_build):
    page = (smoke_build / "html" / "book" / "intro.html").read_text()
    assert 'class="math' in page, "the intro shows the DPO objective"
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page)
    assert any("mathjax" in s.lower() for s in scripts), scripts
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts


def _payload_page(tmp_path: Path) -> Path:
    """A page of library payloads (one of each kind, with a statement that looks like markup) and the
    book's script, as the book serves it."""
    import numpy as np

    from alignment_dynamics import interactive as ia

    rng = np.random.default_rng(0)
    names = [f"behaviour {i}" for i in range(6)]
    figs = [
        ia.embedding_map([rng.normal(size=(8, 2)), rng.normal(size=(6, 2))], [np.arange(8) % 2 == 0, np.arange(6) < 3],
                         names[:2], [["<b>not bold</b> & more"] + [f"s{i}" for i in range(7)], [f"t{i}" for i in range(6)]]),
        ia.behaviour_scatter(names, [{"x": rng.normal(size=6), "y": rng.normal(size=6), "title": "m1"},
                                     {"x": rng.normal(size=6), "y": [np.nan] + list(rng.normal(size=5))}],
                             colour_by=np.arange(6.0), extra={"rank": np.arange(6.0)}),
        ia.pair_matrix(np.where(np.eye(6, dtype=bool), np.nan, rng.normal(size=(6, 6))), names,
                       order_by=np.arange(6.0)[::-1], marks={"(a)": (names[0], names[1])}),
        ia.trained_pairs([(names[0], names[1]), (names[2], names[3])], [0.2, -0.1], [(0.3, 0.1), (0.2, 0.4)], names),
    ]
    static = tmp_path / "_static"
    static.mkdir()
    shutil.copyfile(Path(__file__).resolve().parents[1] / "book" / "_static" / "ad-interactive.js",
                    static / "ad-interactive.js")
    page = tmp_path / "figures.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'>"
                    "<script src='_static/ad-interactive.js'></script></head><body>"
                    + "".join(f._repr_html_() for f in figs) + "</body></html>")
    return page


def test_interactive_figures_draw_on_a_small_page(driver, tmp_path):
    """No book build: the script draws each kind, hover labels say what they should, the toggles hide
    a class and the search box highlights a behaviour; nothing is fetched and nothing is logged."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.get(_payload_page(tmp_path).as_uri())
    figures = driver.execute_script(_INTERACTIVE)
    assert [(f["kind"], f["drawn"]) for f in figures] == [("map", 14), ("scatter", 11), ("matrix", 30), ("matrix", 4)]
    assert _check_interactive(driver) == []
    fig = driver.find_elements(By.CSS_SELECTOR, "div[data-ad-figure]")
    # the map: the first statement is text, not markup; its class and behaviour follow it
    first = fig[0].find_element(By.CSS_SELECTOR, ".ad-mark[data-p='0'][data-i='0']")
    ActionChains(driver).move_to_element(first).perform()
    label = driver.execute_script(_TIP, 0)
    assert label.startswith("<b>not bold</b> & more") and "positive statement of \u201cbehaviour 0\u201d" in label
    assert not fig[0].find_elements(By.CSS_SELECTOR, "b")
    # toggling "negative" hides the 4 + 3 negative statements; toggling a behaviour hides its panel
    fig[0].find_elements(By.CSS_SELECTOR, "button.ad-toggle")[0].click()
    hidden = "return arguments[0].querySelectorAll('.ad-mark.ad-hide').length"
    assert driver.execute_script(hidden, fig[0]) == 7
    fig[0].find_elements(By.CSS_SELECTOR, "button.ad-toggle")[3].click()
    assert driver.execute_script(hidden, fig[0]) == 7 + 3
    # the scatter: hover names the behaviour and its numbers; the search box highlights it in both panels
    ActionChains(driver).move_to_element(fig[1].find_element(By.CSS_SELECTOR, ".ad-mark[data-i='2']")).perform()
    label = driver.execute_script(_TIP, 1)
    assert label.splitlines()[0] == "behaviour 2" and "rank = 2" in label
    fig[1].find_element(By.CSS_SELECTOR, "input.ad-search").send_keys("behaviour 3")
    assert driver.execute_script("return arguments[0].querySelectorAll('.ad-mark.ad-hl').length", fig[1]) == 2
    # the trained pairs: the pair, its gap and who was learned first
    cell = fig[3].find_element(By.CSS_SELECTOR, ".ad-mark[data-k='0']")
    ActionChains(driver).move_to_element(cell).perform()
    label = driver.execute_script(_TIP, 3)
    assert "i = behaviour 0" in label and "j = behaviour 1" in label and "= 0.2" in label
    assert "learned first (loss drop 0.3 vs 0.1): behaviour 0" in label
    assert not driver.execute_script(_REMOTE)
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
