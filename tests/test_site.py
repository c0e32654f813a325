"""The docs site (`make docs`), built from the notebooks' stored outputs into a temporary folder and opened in headless
Chromium from a server on 127.0.0.1: the front page and the explorer chapter show their figures, the loss chapter its
typeset equations and `residual_maps`' entry, the search finds it, no page asks anything from outside the site, the
navigation follows `nbs/sidebar.yml`, no internal link or anchor of any page is broken, and the build needs no network.

Pages are found by name (`index`, a chapter whose name holds `explorer`, one whose name holds `loss`), not by number.
Screenshots go to $HFRAE_ARTIFACTS (default: a temporary folder; the path is printed).
Needs Sphinx, myst-nb and sphinx-book-theme (`make install`), MathJax (`.ci/install-mathjax`), Debian `chromium` and
pip `playwright` (`.ci/install-browser`); skips without them, except under CI=true where it fails.
"""
import functools, html.parser, http.server, importlib.util, os, sys, threading, time
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

from test_browser import CHROMIUM, CHROMIUM_ARGS, require
from test_offline import NO_NETWORK

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = Path(sys.prefix) / 'share' / 'hfrae-site' / 'mathjax' / 'tex-chtml-full.js'
LOADED = "() => [...document.querySelectorAll('article img')].map(i => i.complete && i.naturalWidth > 0)"
TYPESET = """async () => { await MathJax.startup.promise;
    const maths = [...document.querySelectorAll('article .math')];
    return {maths: maths.length, typeset: maths.filter(m => m.querySelector('mjx-container')).length,
            raw: document.querySelector('article').innerText.includes('$$')}; }"""


def _build_module():
    spec = importlib.util.spec_from_file_location('site_build', ROOT / '.ci' / 'docs' / 'build.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


site_build = _build_module()


def _page(pattern):
    "The one top-level chapter whose file name holds `pattern`, as its page's name."
    found = [p for p in site_build.rendered() if '/' not in p and pattern in Path(p).stem]
    assert len(found) == 1, (pattern, found)
    return found[0].replace('.ipynb', '.html')


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site built into a temporary folder, every Python process's sockets refusing to connect (time printed)."
    for mod in ('sphinx', 'myst_nb', 'sphinx_book_theme'):
        require(importlib.util.find_spec(mod), f"{mod} is not installed: run `make install`")
    require(MATHJAX.is_file(), f"no MathJax at {MATHJAX}: run `bash .ci/install-mathjax {sys.prefix}`")
    tmp = tmp_path_factory.mktemp('site')
    (tmp / 'offline').mkdir(); (tmp / 'offline' / 'sitecustomize.py').write_text(NO_NETWORK)
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:   # Sphinx runs in a process of its own: sitecustomize cuts it off too
        mp.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(tmp / 'offline'), os.environ.get('PYTHONPATH')])))
        index = site_build.build(tmp / '_docs', tmp / 'work')
    print(f"\nsite built in {time.monotonic() - start:.1f} s: {index}")
    return index.parent


@pytest.fixture(scope='module')
def server(site):
    "The site served on 127.0.0.1 (a free port); yields its base URL."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args): pass
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_port}/'
    httpd.shutdown(); httpd.server_close()


@pytest.fixture(scope='module')
def browser():
    require(Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing")
    require(importlib.util.find_spec('playwright'), "playwright is not installed")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope='module')
def artifacts(tmp_path_factory):
    out = Path(os.environ.get('HFRAE_ARTIFACTS') or tmp_path_factory.mktemp('site-shots'))
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nsite screenshots in {out}")
    return out


@pytest.fixture
def visit(browser, server, artifacts):
    """Open a page of the site; every request that leaves 127.0.0.1 is refused and recorded, as is every failed load.
    Yields `open(name) -> page`; at the end, no page may have asked for anything outside the site or missed a file."""
    outside, failed = [], []
    context = browser.new_context(viewport={'width': 1300, 'height': 1000})
    def route(r):
        if r.request.url.startswith(server) or r.request.url.startswith(('data:', 'blob:')): r.continue_()
        else: outside.append(r.request.url); r.abort()
    context.route('**/*', route)
    def open_page(name):
        page = context.new_page()
        page.on('response', lambda resp: failed.append(f'{resp.status} {resp.url}') if resp.status >= 400 else None)
        page.goto(server + name, wait_until='load')
        page.screenshot(path=str(artifacts / (Path(name.split('?')[0]).stem + '.png')))
        return page
    yield open_page
    context.close()
    assert not outside, f"pages asked for files outside the site: {outside}"
    assert not failed, f"files the pages asked for are missing: {failed}"


@pytest.mark.parametrize('name', ['index.html', _page('explorer')])
def test_page_shows_its_figures(visit, name):
    page = visit(name)
    page.wait_for_function(f"() => ({LOADED})().every(Boolean)", timeout=20_000)
    loaded = page.evaluate(LOADED)
    assert len(loaded) >= 1 and all(loaded), (name, loaded)


def test_loss_page_typesets_its_equations_and_documents_residual_maps(visit):
    page = visit(_page('loss'))
    maths = page.evaluate(TYPESET)
    assert maths['maths'] >= 3 and maths['typeset'] == maths['maths'] and not maths['raw'], maths
    entry = page.locator('dt[id$=".residual_maps"]')
    assert entry.count() == 1 and entry.is_visible()
    assert 'residual_maps(' in entry.inner_text().replace('\n', '')
    assert 'Eq. 5' in entry.locator('xpath=following-sibling::dd[1]').inner_text()


def test_search_finds_residual_maps_offline(visit):
    page = visit('search.html?q=residual_maps')
    hits = page.locator('#search-results li a')
    hits.first.wait_for(timeout=20_000)
    assert any(_page('loss') in (h.get_attribute('href') or '') for h in hits.all())


class _Links(html.parser.HTMLParser):
    "The href and src values of a page, and the ids it defines."
    def __init__(self):
        super().__init__(); self.refs, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('name'): self.ids.add(a['name'])
        self.refs += [a[k] for k in ('href', 'src') if a.get(k)]


@functools.cache
def _parse(path):
    p = _Links(); p.feed(path.read_text(encoding='utf-8')); return p


def _pages(site):
    "The site's HTML pages (the theme's templates that Sphinx copies into `_static/` are none)."
    return sorted(p for p in site.rglob('*.html') if '_static' not in p.relative_to(site).parts)


def broken_links(site):
    "Every internal href/src of every page of `site` whose file, or whose anchor in an HTML file, does not exist."
    bad = []
    for page in _pages(site):
        for ref in _parse(page).refs:
            url = urlsplit(urljoin(page.relative_to(site).as_posix(), ref))
            if url.scheme or url.netloc: continue   # outside the site: a link, never loaded by a page (see `visit`)
            target = site / unquote(url.path) if url.path else page
            if target.is_dir(): target = target / 'index.html'
            if not target.is_file(): bad.append(f'{page.relative_to(site)}: {ref} (no file)')
            elif url.fragment and target.suffix == '.html' and unquote(url.fragment) not in _parse(target).ids:
                bad.append(f'{page.relative_to(site)}: {ref} (no anchor)')
    return bad


def test_no_internal_link_is_broken(site):
    assert len(_pages(site)) > 20
    assert broken_links(site) == []


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / 'a.html').write_text('<a href="b.html">b</a> <a href="c.html#nowhere">c</a> <img src="x.png">'
                                     '<a href="https://example.org/">out</a> <a id="here" href="#here">self</a>')
    (tmp_path / 'c.html').write_text('<h1 id="there">c</h1>')
    assert broken_links(tmp_path) == ['a.html: b.html (no file)', 'a.html: c.html#nowhere (no anchor)',
                                      'a.html: x.png (no file)']


def test_navigation_follows_the_sidebar(site):
    "The site's menu lists the pages in `nbs/sidebar.yml`'s order, and no exercise solution is published."
    want = [p.replace('.ipynb', '.html') for p in site_build.sidebar_pages()]
    text = (site / 'search.html').read_text(encoding='utf-8')   # a page that is no entry of the menu itself
    menu = _Links(); menu.feed(text[text.index('bd-docs-nav'):].split('</nav>')[0])
    assert [r for r in menu.refs if not r.startswith('sections/')] == want
    assert not list(site.glob('assignments/solutions/*'))


# How the notebooks are staged for the site (no browser needed)

def _nb(*sources):
    return dict(nbformat=4, nbformat_minor=5, metadata={},
                cells=[dict(cell_type='code', id=str(i), metadata={}, outputs=[], source=s, execution_count=None)
                       for i, s in enumerate(sources)])


def test_directives_become_myst_nb_tags():
    nb = site_build.stage_notebook(_nb('#| default_exp loss', '#| hide\nfrom fastcore.test import *',
                                       '#| export\nimport torch', '#| code-fold: true\n#| code-summary: "Code"\nx = 1',
                                       '#| echo: false\nplot()', 'y = 2'))
    tags = [c['metadata']['tags'] for c in nb['cells']]
    assert tags == [['remove-cell']] * 3 + [['hide-input'], ['remove-input'], []]
    assert nb['cells'][3]['source'] == 'x = 1' and nb['cells'][3]['metadata']['mystnb']['code_prompt_show'] == 'Code'


def test_exported_definitions_get_an_entry_each():
    nb = site_build.stage_notebook(_nb(
        '#| default_exp loss',
        '#| export\ndef f(x, k: int = 3) -> int:\n    "Eq. 1 for `x`."\n    return x\ndef _helper(): pass',
        '#| export\nclass A:\n    "An A."\n    def __init__(self, n=1): self.n = n\n'
        '    @property\n    def twice(self):\n        "Twice n."\n        return 2 * self.n\n'
        '    def _hidden(self):\n        "Not shown."',
        '#| export\n@patch\ndef g(self:A, y=1):\n    "A patched method."',
        '#| export\ndef f(x):\n    "Redefined: shown once."'))
    entries = [c['source'] for c in nb['cells'] if c['cell_type'] == 'markdown']
    assert entries[0] == '```{py:function} f(x, k: int=3) -> int\n:module: hfrae.loss\n\nEq. 1 for `x`.\n\n```'
    assert entries[1].startswith('````{py:class} A(n=1)\n:module: hfrae.loss\n\nAn A.\n\n```{py:property} twice\n')
    assert 'hidden' not in entries[1] and entries[2].startswith('```{py:method} A.g(y=1)\n:module: hfrae.loss\n')
    assert len(entries) == 3
    assert [c['metadata']['tags'] for c in nb['cells'] if c['cell_type'] == 'code'][1:] == [['hide-input']] * 3 + [
        ['remove-cell']]


def test_quarto_callouts_become_folds_and_admonitions():
    md = ('Q1?\n\n::: {.callout-tip collapse="true"}\n## Answers\n1. *Frozen* features.\n:::\n\n'
          ':::: {.callout-note title="Why"}\nBecause.\n::::\n')
    assert site_build.callouts(md) == ('Q1?\n\n<details class="callout callout-tip">\n<summary>Answers</summary>\n\n'
                                       '1. *Frozen* features.\n\n</details>\n\n:::{admonition} Why\n:class: note\n\n'
                                       'Because.\n:::\n')
    assert site_build.callouts('no callout ::: here') == 'no callout ::: here'


def test_exports_shows_the_code_and_its_entry():
    nb = site_build.stage_notebook(_nb('#| default_exp loss', '#| exports\ndef f(x):\n    "Doc."'))
    assert nb['cells'][1]['metadata']['tags'] == [] and '{py:function} f(x)' in nb['cells'][2]['source']


def test_navigation_has_a_menu_section_per_sidebar_section():
    stubs = {}
    trees = site_build.navigation(['index.ipynb', 'intro.ipynb', {'section': 'Part one', 'contents': [
        'a.ipynb', {'section': 'More exercises', 'contents': ['ex/b.ipynb']}]}], stubs)
    assert trees == ['```{toctree}\n:hidden:\n\n/intro\n```',
                     '```{toctree}\n:hidden:\n:caption: Part one\n\n/a\n/sections/more-exercises\n```']
    assert stubs == {'sections/more-exercises.md': '# More exercises\n\n```{toctree}\n:maxdepth: 1\n\n/ex/b\n```\n'}


def test_the_site_renders_what_quarto_renders():
    pages = site_build.rendered()
    assert 'index.ipynb' in pages and not [p for p in pages if 'solutions' in p]
    assert set(site_build.sidebar_pages()) <= set(pages)
