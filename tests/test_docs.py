"""The documentation site and the README, checked without Quarto: the sidebar follows the chapters, the solutions stay
out of the site, building the site runs no measurement and shows the benchmarks' code folded, and README.md says what
index.ipynb says."""
import configparser, csv, re, shutil
from pathlib import Path

import pytest
import yaml
from nbdev.config import get_config
from nbdev.process import NBProcessor
from nbdev.processors import _do_eval, _want_doc
from nbdev.quarto import nbdev_sidebar, refresh_quarto_yml

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
BENCHMARKS = ('11_benchmarks.ipynb', '11a_defaults.ipynb', '11b_peers.ipynb')
NEXT = re.compile(r'^\*\*Next:\*\* \[[^\]]+\]\(([^)]+)\)$')     # the cell that ends a chapter
SHARED_HEADINGS = ('Use it in an experiment', 'Command line', 'Chapters', 'Reference')


def _yml(name): return yaml.safe_load((NBS / name).read_text(encoding='utf-8'))


def _entries(contents):
    "The pages a Quarto sidebar's `contents` lists, depth first (sections' `href` and `contents` included)."
    for e in contents:
        if isinstance(e, str): yield e
        elif 'section' in e:
            if 'href' in e: yield e['href']
            yield from _entries(e.get('contents', []))
        else: yield e['href']


def _sidebar(): return list(_entries(_yml('sidebar.yml')['website']['sidebar']['contents']))


def _chapters():
    "The top-level notebooks in file-name order, index first (the order nbdev's own sidebar uses)."
    return sorted((p.name for p in NBS.glob('*.ipynb')), key=lambda n: (n != 'index.ipynb', n))


def test_sidebar_lists_the_chapters_in_order():
    top = [e for e in _sidebar() if '/' not in e]
    assert top == _chapters()
    assert all((NBS / e).is_file() for e in _sidebar()), [e for e in _sidebar() if not (NBS / e).is_file()]
    assert len(set(_sidebar())) == len(_sidebar())


def test_sidebar_lists_the_exercises_and_no_solution():
    nested = [e for e in _sidebar() if '/' in e]
    assert nested == [f'assignments/{p.name}' for p in sorted((NBS / 'assignments').glob('*.ipynb'))]
    assert not [e for e in _sidebar() if 'solutions' in e]


def test_nbdev_keeps_the_committed_site_config(tmp_path, monkeypatch):
    "What `nbdev_docs` does before Quarto runs: it rewrites `nbdev.yml` and leaves `_quarto.yml` and `sidebar.yml` be."
    shutil.copy(ROOT / 'settings.ini', tmp_path)
    shutil.copytree(NBS, tmp_path / 'nbs', ignore=shutil.ignore_patterns('*.ipynb_checkpoints'))
    monkeypatch.chdir(tmp_path)
    get_config.cache_clear()
    try:
        refresh_quarto_yml(); nbdev_sidebar.__wrapped__()
        for name in ('_quarto.yml', 'sidebar.yml'):
            assert (tmp_path / 'nbs' / name).read_text() == (NBS / name).read_text(), name
        assert 'output-dir: _docs' in (tmp_path / 'nbs' / 'nbdev.yml').read_text()
        nbdev_sidebar.__wrapped__(force=True)   # what `custom_sidebar = False` would do: list every notebook
        assert 'assignments/solutions/' in (tmp_path / 'nbs' / 'sidebar.yml').read_text()
    finally: get_config.cache_clear()


def test_settings_keep_the_sidebar():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    assert cfg['DEFAULT'].getboolean('custom_sidebar')
    assert 'custom_quarto_yml' not in cfg['DEFAULT']   # nbdev would warn; it keeps an existing _quarto.yml anyway


def _quarto_targets(patterns):
    "The notebooks Quarto renders for `project: render:` (a name without '/' matches anywhere, 'dir/' all below it)."
    def full(p): return '**/' + (p + '**/*' if p.endswith('/') else p)
    def files(globs): return {q.relative_to(NBS).as_posix() for g in globs for q in NBS.glob(g) if q.is_file()}
    keep = files(full(p) for p in patterns if not p.startswith('!'))
    return {p for p in keep - files(full(p[1:]) for p in patterns if p.startswith('!')) if p.endswith('.ipynb')}


def test_solutions_are_not_rendered():
    q = _yml('_quarto.yml')
    targets = _quarto_targets(q['project']['render'])
    assert targets == {p.relative_to(NBS).as_posix() for p in NBS.rglob('*.ipynb') if 'solutions' not in p.parts}
    assert set(_sidebar()) <= targets
    assert q['execute']['enabled'] is False
    assert {'nbdev.yml', 'sidebar.yml'} <= set(q['metadata-files'])


def test_quarto_targets_can_exclude():
    assert 'assignments/solutions/02_loss.ipynb' in _quarto_targets(['*.ipynb'])
    assert 'assignments/02_loss.ipynb' not in _quarto_targets(['*.ipynb', '!assignments/'])


def _cells(name): return NBProcessor(NBS / name, procs=[]).nb.cells


def _slow(cells): return [c for c in cells if c.cell_type == 'code' and 'slow' in c.directives_]


@pytest.mark.parametrize('name', BENCHMARKS)
def test_benchmark_code_is_folded(name):
    slow = _slow(_cells(name))
    assert slow and all(c.directives_.get('code-fold:') == ['true'] for c in slow), name


def _runs_at_docs_time(cell):
    "Would `nbdev_docs` run this cell (nbdev runs exported cells and cells with imports, to render the API docs)?"
    return bool(_do_eval(cell))


def _imports_only(cell):
    return all(l.startswith(('import ', 'from ')) for l in cell.source.splitlines() if l.strip())


@pytest.mark.parametrize('name', sorted(p.name for p in NBS.glob('*.ipynb')))
def test_building_the_site_runs_no_slow_cell(name):
    cells = _cells(name)
    if not any(_want_doc(c) for c in cells): return   # nbdev runs nothing in a notebook without exported code
    bad = [c.source for c in _slow(cells) if _runs_at_docs_time(c) and not _imports_only(c)]
    assert not bad, f"{name}: nbdev_docs would run these slow cells; move their imports to a cell of their own: {bad}"


def test_a_slow_cell_with_an_import_would_run():
    from execnb.nbio import mk_cell
    from nbdev.process import extract_directives
    cell = mk_cell('#| slow\nimport time\ntime.sleep(60)')
    cell.directives_ = extract_directives(cell)
    with pytest.warns(UserWarning, match='imports and other code'): runs = _runs_at_docs_time(cell)
    assert runs and not _imports_only(cell)


# README.md and nbs/index.ipynb

def _index_markdown():
    "The front page's prose, without its closing link to the first chapter (the README has no such link)."
    nb = NBProcessor(NBS / 'index.ipynb', procs=[]).nb
    prose = [c.source for c in nb.cells if c.cell_type == 'markdown']
    return '\n\n'.join(s for s in prose if not NEXT.match(s.strip()))


def _sections(md):
    "The markdown's `## ` sections: heading -> text (code fences are not headings)."
    out, head, fenced = {}, None, False
    for line in md.splitlines():
        if line.startswith('```'): fenced = not fenced
        if not fenced and line.startswith('## '): head = line[3:].strip(); out[head] = []
        elif head: out[head].append(line)
    return {h: '\n'.join(ls).strip() for h, ls in out.items()}


def _first_fence(text):
    m = re.search(r'```[^\n]*\n(.*?)```', text, re.S)
    return m.group(1) if m else None


def _chapter_rows(text):
    "(notebook stem, module, what it teaches) of each chapter row of a table."
    rows = re.findall(r'^\|[^|\n]*?\b(\d\d[a-z]?_\w+)\.ipynb[^|\n]*\|([^|\n]*)\|([^\n]*)\|$', text, re.M)
    return [tuple(' '.join(x.split()) for x in r) for r in rows]


def readme_index_differences(readme, index):
    "How the markdown of README.md and of index.ipynb disagree on the sections they share; [] if they agree."
    r, i = _sections(readme), _sections(index)
    diffs = [f"'## {h}' missing from {w}" for h in SHARED_HEADINGS for w, s in (('README', r), ('index', i))
             if h not in s]
    if diffs: return diffs
    for h in ('Use it in an experiment', 'Command line'):
        if _first_fence(r[h]) is None or _first_fence(r[h]) != _first_fence(i[h]): diffs.append(f"'{h}' code differs")
    if _chapter_rows(r['Chapters']) != _chapter_rows(i['Chapters']): diffs.append("'Chapters' tables differ")
    if ' '.join(r['Reference'].split()) != ' '.join(i['Reference'].split()): diffs.append("'Reference' differs")
    return diffs


def test_readme_says_what_index_says():
    assert readme_index_differences((ROOT / 'README.md').read_text(encoding='utf-8'), _index_markdown()) == []


def test_chapter_tables_name_every_chapter():
    stems = [Path(n).stem for n in _chapters() if n != 'index.ipynb']
    for md in ((ROOT / 'README.md').read_text(encoding='utf-8'), _index_markdown()):
        assert [row[0] for row in _chapter_rows(_sections(md)['Chapters'])] == stems


@pytest.mark.parametrize('old, new, diff', [
    ('hfrae test  --run RUN --data DIR', 'hfrae test --run RUN --data DIR', "'Command line' code differs"),
    ('scores = anomaly_score(maps)', 'scores = anomaly_score(phis)', "'Use it in an experiment' code differs"),
    ('| `hfrae.viz` |', '| `hfrae.vis` |', "'Chapters' tables differ"),
    ('arXiv:2405.09148', 'arXiv:2405.09149', "'Reference' differs"),
    ('## Command line', '## Commands', "'## Command line' missing from README")])
def test_a_changed_readme_is_caught(old, new, diff):
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    assert old in readme
    assert readme_index_differences(readme.replace(old, new, 1), _index_markdown()) == [diff]


# Numbers quoted from the real-defect study come from its record, nbs/records/piped_defaults.csv

def _piped_mean(metric, n=12, **where):
    "Mean of `metric` over the PIPED kinds' rows of the record that match `where` (values as the CSV writes them)."
    with open(NBS / 'records' / 'piped_defaults.csv', newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['data'].startswith('PA_')
                and all(r[k] == str(v) for k, v in where.items())]
    assert len(rows) == n, (where, len(rows))
    return sum(float(r[metric]) for r in rows) / len(rows)


def _readme(): return ' '.join((ROOT / 'README.md').read_text(encoding='utf-8').split())


def test_width_numbers_come_from_the_record():
    at = dict(size=256, seed=0, steps=16, mode='paper', sigma=4.0)
    narrow, wide = (_piped_mean('aupro', factor=f, **at) for f in (1, 2))
    quote = f"AUPRO {narrow:.3f} against {wide:.3f}"
    chapter = '\n'.join(c.source for c in _cells('11a_defaults.ipynb') if c.cell_type == 'markdown')
    for text in ((ROOT / 'README.md').read_text(encoding='utf-8'), chapter):
        assert quote in ' '.join(text.split()), quote
    assert f"({_piped_mean('aupro', factor=2, size=128, seed=0, steps=16, mode='paper', sigma=4.0):.2f})" in \
        (ROOT / 'README.md').read_text(encoding='utf-8')


# The learner's order: each chapter ends with a link to the one after it in the sidebar



def _next_link(path):
    "The target of the `**Next:** [title](file)` cell that ends the chapter at `path`, or None."
    cells = NBProcessor(path, procs=[]).nb.cells
    m = NEXT.match(cells[-1].source.strip()) if cells[-1].cell_type == 'markdown' else None
    return m and m.group(1)


def test_next_links_follow_the_sidebar():
    order = _sidebar()
    chapters = [e for e in order if '/' not in e]
    expected = chapters[1:] + [next(e for e in order if '/' in e)]
    assert [_next_link(NBS / c) for c in chapters] == expected


def test_a_wrong_or_missing_next_link_is_caught(tmp_path):
    nb = (NBS / '02_loss.ipynb').read_text(encoding='utf-8')
    (tmp_path / 'wrong.ipynb').write_text(nb.replace('](03_scoring.ipynb)', '](04_model.ipynb)'), encoding='utf-8')
    (tmp_path / 'none.ipynb').write_text(nb.replace('**Next:**', 'Next'), encoding='utf-8')
    assert _next_link(NBS / '02_loss.ipynb') == '03_scoring.ipynb'
    assert _next_link(tmp_path / 'wrong.ipynb') == '04_model.ipynb'
    assert _next_link(tmp_path / 'none.ipynb') is None


@pytest.mark.parametrize('name', sorted(p.name for p in NBS.glob('*.ipynb')))
def test_links_between_chapters_resolve(name):
    "Every relative link to a notebook in a chapter's prose names a notebook that exists."
    text = '\n'.join(c.source for c in NBProcessor(NBS / name, procs=[]).nb.cells if c.cell_type == 'markdown')
    targets = re.findall(r'\]\(([^):#\s]+\.ipynb)(?:#[^)]*)?\)', text)
    assert [t for t in targets if not (NBS / t).is_file()] == []


# Inference times quoted by the README come from chapter Benchmarks' record, nbs/records/inference_ms.csv

def _inference_ms(backbone, width_factor=1, threads=2):
    with open(NBS / 'records' / 'inference_ms.csv', newline='') as f:
        rows = [r for r in csv.DictReader(f) if (r['backbone'], r['width_factor'], r['threads'])
                == (backbone, str(width_factor), str(threads))]
    assert len(rows) == 1, (backbone, width_factor, threads, len(rows))
    return float(rows[0]['ms_per_image'])


def test_inference_numbers_come_from_the_record():
    ms = lambda *a: f'{_inference_ms(*a):.0f}'
    lite = {ms('efficientnet_lite1'), ms('efficientnet_lite2')}
    assert len(lite) == 1, lite
    quote = (f"{ms('efficientnet_lite0')} ms/image with EfficientNet-Lite0 ({ms('efficientnet_lite0', 1, 1)} ms on one "
             f"thread; {ms('efficientnet_lite0', 2)} ms with a decoder twice as wide, `--width-factor 2`), "
             f"{lite.pop()} ms with Lite1 or Lite2, {ms('resnet18')} ms with ResNet-18, "
             f"{ms('wide_resnet50_2')} ms with "
             f"Wide-ResNet-50-2")
    assert quote in ' '.join((ROOT / 'README.md').read_text(encoding='utf-8').split()), quote


def test_step_and_sigma_numbers_come_from_the_record():
    wide = dict(size=256, factor=2, seed=0, mode='paper', sigma=4.0)
    steps = [f"{_piped_mean('aupro', steps=s, **wide):.2f}" for s in (4, 8, 16, 32, 60)]
    assert steps[1] == steps[2]                                   # the README says "after 8 and after 16"
    assert (f"{steps[0]} after 4 steps, {steps[1]} after 8 and after 16, {steps[3]} after 32, {steps[4]} after 60"
            in _readme())
    at16 = [f"{_piped_mean(m, steps=16, **wide):.3f}" for m in ('image_auroc', 'pixel_auroc', 'aupro')]
    assert "image AUROC {}, pixel AUROC {}, AUPRO {}, three seeds".format(*at16) in _readme()
    narrow = dict(size=256, factor=1, steps=16, mode='paper')
    s2, s4 = (_piped_mean('aupro', n=36, sigma=s, **narrow) for s in (2.0, 4.0))
    assert f"by {s2 - s4:.3f} AUPRO ({s2:.3f} against {s4:.3f}, three seeds" in _readme()


# The showcase: README's demo row for the shipped PIPED kind is what the front page and the explorer tour store

SHOWN = re.compile(r'image AUROC (\d\.\d{3}), pixel AUROC (\d\.\d{3}), AUPRO (\d\.\d{3})')


def _stored_metrics(name):
    "The `image AUROC …, pixel AUROC …, AUPRO …` line a chapter's stored outputs show."
    cells = NBProcessor(NBS / name, procs=[]).nb.cells
    outs = [o for c in cells if c.cell_type == 'code' for o in c.get('outputs', [])]
    text = '\n'.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', '')) for o in outs)
    found = SHOWN.findall(text)
    assert len(found) == 1, (name, found)
    return found[0]


def test_showcase_numbers_agree():
    row = re.search(r'^\| PA_GLA01_TL \| (\S+) \| (\S+) \| (\S+) \|$', (ROOT / 'README.md').read_text(encoding='utf-8'),
                    re.M).groups()
    assert _stored_metrics('index.ipynb') == _stored_metrics('06_explorer.ipynb') == row


def _chapter_text():
    "Every chapter's sources and stored text outputs, and the records, as one string."
    parts = [p.read_text(encoding='utf-8') for p in sorted((NBS / 'records').glob('*.csv'))]
    for p in sorted(NBS.rglob('*.ipynb')):
        for c in NBProcessor(p, procs=[]).nb.cells:
            parts.append(c.source)
            for o in c.get('outputs', []):
                parts.append(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', '')))
    return '\n'.join(parts)


def test_readme_decimals_are_measured_in_the_chapters():
    "A metric the README quotes (0.xxx) stands in a chapter's text, a stored output or a record."
    numbers = set(re.findall(r'(?<![\d.])0\.\d{3,4}(?!\d)', (ROOT / 'README.md').read_text(encoding='utf-8')))
    text = _chapter_text()
    assert len(numbers) > 20 and sorted(n for n in numbers if n not in text) == []


# Stored figures are legible: every PNG a chapter stores records at least 100 dpi (its pHYs chunk)

def _png_dpi(data):
    "The horizontal resolution a PNG records in its pHYs chunk, in dots per inch (0 without one)."
    import base64, struct
    b = base64.b64decode(data); i = b.find(b'pHYs')
    return 0 if i < 0 else struct.unpack('>I', b[i + 4:i + 8])[0] * 0.0254


@pytest.mark.parametrize('name', sorted(p.relative_to(NBS).as_posix() for p in NBS.rglob('*.ipynb')))
def test_stored_figures_are_at_least_100_dpi(name):
    cells = NBProcessor(NBS / name, procs=[]).nb.cells
    pngs = [o['data']['image/png'] for c in cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    assert [round(d, 1) for d in map(_png_dpi, pngs) if d < 100] == []
