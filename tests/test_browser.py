"""Open every page of the rendered smoke book in headless Chromium and fail on console errors, broken
images, broken links inside the book, unrendered math, or anything loaded from the internet."""

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


def test_every_page_renders_cleanly_in_a_browser(smoke_build, driver):
    html_dir = smoke_build / "html"
    pages = _pages(html_dir)
    assert len(pages) >= 3
    problems: dict[str, list] = {}
    memo: dict = {}
    math_pages = 0
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


def test_mathjax_is_bundled_not_fetched(smoke_build):
    page = (smoke_build / "html" / "book" / "intro.html").read_text()
    assert 'class="math' in page, "the intro shows the DPO objective"
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page)
    assert any("mathjax" in s.lower() for s in scripts), scripts
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
