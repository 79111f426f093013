"""The built book in a real browser: a smoke-sized book, served locally, loaded by headless Chromium.

Builds every chapter of the run table with smoke=True into a temporary book
root (the same steps as `runs.build_book`: run_chapter, write_toc,
write_findings, jupyter_book_command), serves `_build/html` on 127.0.0.1 and
loads each page in headless Chromium (`--dump-dom` after scripts ran, and a
screenshot saved under `_build/html/_screenshots/`). Checks: every chapter
page loads, every <img> resolves over HTTP with a non-empty body, the
previous/next links between chapters exist and resolve, and MathJax comes
from the book's own `_static/mathjax` with no script from another host.

Needs a Chromium binary (`chromium`, `chromium-browser` or `google-chrome`);
the test installs nothing and is skipped without one. `.ci/run` installs
Debian's chromium before the tests. Set TUNESTUDY_BROWSER_HTML to an
already built `_build/html` folder to check that instead of building one.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from tunestudy import runs

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium on PATH (CI installs Debian's chromium in .ci/run; "
                            "locally: apt-get install chromium)")

CHAPTERS = [c for c in runs.CHAPTERS if c.source.exists()]
PROBE = "mathjax_probe"
PROBE_TEXT = """# MathJax probe

Inline math $\\mathrm{KL}(P_{\\text{base}} \\,\\|\\, P_{\\text{tuned}})$ and a display equation:

$$
\\mathrm{KL}(p \\,\\|\\, q) = \\sum_v p(v) \\log \\frac{p(v)}{q(v)}
$$
"""


def page_order(html_dir: Path) -> list[str]:
    """Landing page, chapters in table order, then the MathJax probe if the book has it."""
    static = tuple(p for p in runs.STATIC_PAGES if (html_dir / "book" / f"{p[1]}.html").exists())
    order = ["book/intro.html"] + [f"{file}.html" for _, file, _ in runs.toc_entries(CHAPTERS, static)]
    if (html_dir / "book" / f"{PROBE}.html").exists():
        order.append(f"book/{PROBE}.html")
    return order


# --- the book ----------------------------------------------------------------------------------

def build_smoke_html(root: Path) -> Path:
    """What `python -m tunestudy book --smoke` does after running the chapters, into `root`."""
    shutil.copy(runs.REPO_ROOT / "_config.yml", root / "_config.yml")
    for page in runs.book_pages():  # the landing page, the references and their bibliography
        shutil.copy(page, root / "book" / page.name)
    toc = runs.write_pages(runs.CHAPTERS, root=root)
    # Sphinx loads MathJax only on pages with math: one test-only page with an equation,
    # appended after the chapters, checks that math renders from the book itself.
    (root / "book" / f"{PROBE}.md").write_text(PROBE_TEXT)
    toc.write_text(toc.read_text() + f"  - caption: Test only\n    chapters:\n      - file: book/{PROBE}\n")
    subprocess.run(runs.jupyter_book_command(root, toc), check=True, stdout=subprocess.DEVNULL)
    return root / "_build" / "html"


@pytest.fixture(scope="module")
def html_dir(request) -> Path:
    given = os.environ.get("TUNESTUDY_BROWSER_HTML")
    if given:
        return Path(given)
    return build_smoke_html(request.getfixturevalue("smoke_book"))  # the chapters run once per session


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(html_dir) -> str:
    """Base URL of the book served from 127.0.0.1 on a free port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(html_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


# --- the browser -------------------------------------------------------------------------------

def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90)


class Page(HTMLParser):
    """The parts of a page the checks need: images, scripts, links."""

    def __init__(self):
        super().__init__()
        self.images, self.scripts, self.links, self.mathjax_output = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img" and "src" in attrs:
            self.images.append(attrs["src"])
        elif tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        elif tag == "a" and attrs.get("href"):
            self.links.append((attrs.get("class") or "", attrs["href"]))
        elif tag == "mjx-container":
            self.mathjax_output += 1


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


@pytest.fixture(scope="module")
def pages(site, html_dir, tmp_path_factory) -> dict:
    """{page path: (url, parsed DOM after scripts)} for the landing page and every chapter."""
    profile = tmp_path_factory.mktemp("chromium_profile")
    shots = html_dir / "_screenshots"
    shots.mkdir(exist_ok=True)
    out = {}
    for path in page_order(html_dir):
        url = urljoin(site, path)
        # The virtual-time budget lets MathJax and the theme's scripts finish before the DOM is read.
        result = chromium(profile, "--virtual-time-budget=10000", "--dump-dom", url)
        assert result.returncode == 0, f"{path}: chromium failed: {result.stderr[-500:]}"
        page = Page()
        page.feed(result.stdout)
        page.dom = result.stdout
        shot = shots / (Path(path).stem + ".png")
        result = chromium(profile, "--window-size=1280,1600", "--virtual-time-budget=10000",
                          f"--screenshot={shot}", url)
        assert result.returncode == 0 and shot.exists(), f"{path}: no screenshot: {result.stderr[-500:]}"
        out[path] = (url, page)
    return out


# --- the checks --------------------------------------------------------------------------------

def test_every_chapter_page_loads(pages, html_dir):
    assert all(f"book/chapters/{c.name}.html" in pages for c in CHAPTERS)
    for path, (url, page) in pages.items():
        assert fetch(url)[0] == 200
        assert "<article" in page.dom or 'role="main"' in page.dom, f"{path}: no article body"
        assert "Traceback (most recent call last)" not in page.dom, f"{path} shows a Python traceback"
        shot = html_dir / "_screenshots" / (Path(path).stem + ".png")
        assert shot.stat().st_size > 10_000, f"{shot} looks blank"


def test_every_image_resolves(pages):
    checked = 0
    for path, (url, page) in pages.items():
        for src in page.images:
            if src.startswith("data:"):
                assert len(src) > 30, f"{path}: empty inline image"
                continue
            target = urljoin(url, src)
            status, body = fetch(target)
            assert status == 200 and body, f"{path}: <img src={src!r}> -> {status}, {len(body)} bytes"
            checked += 1
    assert checked
    # Every chapter draws figures; a page with none means plt.show() emitted no image in the kernel.
    no_figure = [c.name for c in CHAPTERS if not pages[f"book/chapters/{c.name}.html"][1].images]
    assert not no_figure, f"chapter pages with no figure: {', '.join(no_figure)}"


def nav_link(page: Page, direction: str) -> str | None:
    for cls, href in page.links:
        if direction in cls.split():
            return href
    return None


def test_chapter_navigation_links(pages, html_dir):
    order = page_order(html_dir)
    for i, path in enumerate(order):
        url, page = pages[path]
        expected_next = order[i + 1] if i + 1 < len(order) else None
        expected_prev = order[i - 1] if i > 0 else None
        for direction, expected in (("right-next", expected_next), ("left-prev", expected_prev)):
            href = nav_link(page, direction)
            if expected is None:
                continue
            assert href, f"{path}: no {direction} link (expected one to {expected})"
            target = urljoin(url, href)
            assert urlparse(target).path.lstrip("/") == expected, f"{path}: {direction} goes to {href}"
            assert fetch(target)[0] == 200
        # The sidebar lists every chapter from every page, and each entry resolves.
        for chapter in CHAPTERS:
            if path.endswith(f"/{chapter.name}.html"):
                continue  # the current page's own entry is "#"
            hrefs = [h for _, h in page.links if h.split("#")[0].endswith(f"{chapter.name}.html")]
            assert hrefs, f"{path}: sidebar has no link to {chapter.name}"
            assert fetch(urljoin(url, hrefs[0].split("#")[0]))[0] == 200


def test_mathjax_is_local(pages, html_dir):
    """No script from another host on any page; equations render with the book's own MathJax."""
    for path, (url, page) in pages.items():
        for src in page.scripts:
            target = urlparse(urljoin(url, src))
            assert target.hostname == "127.0.0.1", f"{path}: script from another host: {src}"
            if "mathjax" in src.lower():
                assert "_static/mathjax" in src, f"{path}: MathJax not served by the book: {src}"
                status, body = fetch(urljoin(url, src))
                assert status == 200 and body, f"{path}: {src} -> {status}"
        if page.mathjax_output or 'class="math' in page.dom:
            assert any("_static/mathjax" in s for s in page.scripts), f"{path} has math but no local MathJax"
    probe = f"book/{PROBE}.html"
    if probe not in pages:
        pytest.skip("the book given by TUNESTUDY_BROWSER_HTML has no MathJax probe page")
    page = pages[probe][1]
    assert any("_static/mathjax" in s for s in page.scripts), "the probe page does not load _static/mathjax"
    assert page.mathjax_output >= 2, "MathJax did not typeset the probe's equations (offline)"
