"""Build the docs site offline: `python .ci/docs/build.py [--out _docs] [--work _proc/site]`.

Quarto (what `nbdev_docs` uses) is not needed: the notebooks that `nbs/_quarto.yml` renders are staged for Sphinx and
myst-nb with nbdev's cell directives turned into myst-nb's tags, an API entry (signature and docstring, read from the
source: nothing is imported) follows each exported definition as nbdev's show_doc would, and the navigation follows
`nbs/sidebar.yml`. The stored outputs are what the pages show: no cell runs, and no page loads anything from outside.
"""
import argparse, ast, copy, json, re, shutil, subprocess, sys
from pathlib import Path

import yaml
from nbdev.showdoc import showdoc_nm

ROOT = Path(__file__).resolve().parents[2]
NBS = ROOT / 'nbs'
CONF = Path(__file__).resolve().parent
LIB = 'hfrae'
_DIRECTIVE = re.compile(r'^\s*#\|\s?(.*)$')


def _yml(name): return yaml.safe_load((NBS / name).read_text(encoding='utf-8'))


def rendered(nbs=NBS):
    "The notebooks (paths relative to `nbs`) that `_quarto.yml`'s `project: render:` patterns name."
    patterns = yaml.safe_load((nbs / '_quarto.yml').read_text(encoding='utf-8'))['project']['render']
    def files(p):
        glob = '**/' + (p + '**/*' if p.endswith('/') else p)
        return {q.relative_to(nbs).as_posix() for q in nbs.glob(glob) if q.is_file() and q.suffix == '.ipynb'}
    keep = set().union(*[files(p) for p in patterns if not p.startswith('!')])
    drop = set().union(*[files(p[1:]) for p in patterns if p.startswith('!')])
    return sorted(p for p in keep - drop if '.ipynb_checkpoints' not in p)


def directives(source):
    "nbdev's and Quarto's `#|` lines at the top of a cell, as {name: value}, and the code without them."
    lines, dirs = source.splitlines(), {}
    while lines and (m := _DIRECTIVE.match(lines[0])):
        name, _, value = m.group(1).strip().partition(' ')
        dirs[name.rstrip(':')] = value.strip().strip('"\'')
        lines.pop(0)
    return dirs, '\n'.join(lines)


def _public(name): return not name.startswith('_') or name.startswith('__')


def _signature(fn, method=False):
    "A function's parameters as written (annotations and defaults included), without `self` for a method."
    args = copy.deepcopy(fn.args)
    decos = {ast.unparse(d) for d in fn.decorator_list}
    if method and 'staticmethod' not in decos:
        if args.posonlyargs: args.posonlyargs.pop(0)
        elif args.args: args.args.pop(0)
    ret = f' -> {ast.unparse(fn.returns)}' if fn.returns else ''
    return f'({ast.unparse(args)}){ret}'


def _fields(cls):
    "A dataclass's or NamedTuple's fields as a signature."
    return '(' + ', '.join(f'{ast.unparse(o.target)}: {ast.unparse(o.annotation)}' +
                           (f' = {ast.unparse(o.value)}' if o.value else '')
                           for o in cls.body if isinstance(o, ast.AnnAssign) and isinstance(o.target, ast.Name)) + ')'


def _directive(kind, head, module, doc, fence='```', body=''):
    return f'{fence}{{py:{kind}}} {head}\n' + (f':module: {module}\n' if module else '') + f'\n{doc}\n\n{body}{fence}'


def _member(fn):
    "The entry of a method or property defined in a class's body, inside the class's entry."
    decos = {ast.unparse(d) for d in fn.decorator_list}
    if 'property' in decos: return _directive('property', fn.name, None, ast.get_docstring(fn)) + '\n'
    kind = 'staticmethod' if 'staticmethod' in decos else 'classmethod' if 'classmethod' in decos else 'method'
    return _directive(kind, fn.name + _signature(fn, method=True), None, ast.get_docstring(fn)) + '\n'


def _entry(node, module):
    """The API entry of one exported definition, read from its source (nothing is imported): its signature and
    docstring as nbdev's show_doc shows them; a class also lists the documented public methods of its body."""
    name, doc = showdoc_nm(node), ast.get_docstring(node) or ''
    if not isinstance(node, ast.ClassDef):
        return _directive('method' if '.' in name else 'function', name + _signature(node, '.' in name), module, doc)
    fns = [o for o in node.body if isinstance(o, (ast.FunctionDef, ast.AsyncFunctionDef))]
    init = next((o for o in fns if o.name == '__init__'), None)
    sig = _signature(init, method=True) if init else _fields(node) if any(
        isinstance(o, ast.AnnAssign) for o in node.body) else ''
    members = [o for o in fns if (not o.name.startswith('_') or o.name == '__call__') and ast.get_docstring(o)]
    return _directive('class', name + sig, module, doc, '````' if members else '```', ''.join(map(_member, members)))


def api_entries(code, module, shown):
    "The API entries (MyST) of the public functions and classes that an exported cell defines (each name once)."
    try: tree = ast.parse(code)
    except SyntaxError: return []
    nodes = [o for o in tree.body if isinstance(o, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
             and _public(o.name) and showdoc_nm(o) not in shown]
    shown.update(showdoc_nm(o) for o in nodes)
    return [_entry(o, module) for o in nodes]


_CALLOUT = re.compile(r'^(:{3,})[ \t]*\{\.callout-(\w+)([^}\n]*)\}[ \t]*\n(.*?)^\1[ \t]*$', re.M | re.S)


def _callout(m):
    "One Quarto callout as MyST: folded (`collapse=\"true\"`) as a `<details>` block, else as an admonition."
    kind, attrs, body = m.group(2), m.group(3), m.group(4).strip('\n')
    title = re.search(r'title="([^"]*)"', attrs)
    head = re.match(r'#+[ \t]+(.*)\n?', body)
    if head: body = body[head.end():]
    title = title.group(1) if title else head.group(1) if head else kind.capitalize()
    if re.search(r'collapse="?true', attrs):
        return f'<details class="callout callout-{kind}">\n<summary>{title}</summary>\n\n{body}\n\n</details>'
    return f':::{{admonition}} {title}\n:class: {kind}\n\n{body}\n:::'


def callouts(md):
    "Quarto's callout blocks in a markdown cell (`::: {.callout-tip collapse=\"true\"}` ... `:::`) as MyST."
    return _CALLOUT.sub(_callout, md)


def _md(source, id): return dict(cell_type='markdown', id=id, metadata={}, source=source)


def _tags(dirs):
    "myst-nb's tags for nbdev's and Quarto's directives."
    if 'hide' in dirs or dirs.get('include') == 'false' or 'default_exp' in dirs or 'exporti' in dirs:
        return ['remove-cell']
    tags = []
    if dirs.get('echo') == 'false': tags.append('remove-input')
    elif dirs.get('code-fold') in ('true', 'show') or 'export' in dirs: tags.append('hide-input')
    if dirs.get('output') == 'false': tags.append('remove-output')
    return tags


def stage_notebook(nb):
    "The notebook as myst-nb should render it: directives as tags, an API entry after each exported definition."
    module = next((f'{LIB}.{d["default_exp"].split()[0]}' for c in nb['cells'] if c['cell_type'] == 'code'
                   for d in [directives(''.join(c['source']))[0]] if d.get('default_exp')), None)
    cells, shown = [], set()
    for cell in nb['cells']:
        source = ''.join(cell['source'])
        if cell['cell_type'] != 'code': cells.append(dict(cell, source=callouts(source))); continue
        dirs, code = directives(source)
        tags = _tags(dirs)
        exported = bool(dirs.keys() & {'export', 'exports'})
        entries = api_entries(code, module, shown) if exported and module else []
        if 'export' in dirs and not entries: tags = ['remove-cell']   # imports and constants: nbdev hides them too
        meta = dict(cell.get('metadata', {}), tags=tags)
        prompt = dirs.get('code-summary') or ('Source' if entries else None)
        if prompt and 'hide-input' in tags: meta['mystnb'] = dict(code_prompt_show=prompt, code_prompt_hide='Hide')
        cells.append(dict(cell, source=code, metadata=meta))
        cells.extend(_md(e, f'{cell.get("id", len(cells))}-api{i}') for i, e in enumerate(entries))
    return dict(nb, cells=cells)


def sidebar_pages(contents=None):
    "The pages `sidebar.yml` lists, depth first, in its order (a section's `href` before its contents)."
    for e in _yml('sidebar.yml')['website']['sidebar']['contents'] if contents is None else contents:
        if isinstance(e, str): yield e
        else:
            if 'href' in e: yield e['href']
            yield from sidebar_pages(e.get('contents', []))


def _doc(page): return '/' + page.removesuffix('.ipynb').removesuffix('.md')


def _slug(text): return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')


def navigation(contents, stubs):
    "Toctrees for the sidebar's `contents`: one per top-level section; nested sections become pages in `stubs`."
    def pages(items):
        for e in items:
            if isinstance(e, str): yield _doc(e)
            elif 'section' in e:
                stub = f'sections/{_slug(e["section"])}.md'
                body = [_doc(e['href'])] if 'href' in e else []
                stubs[stub] = f'# {e["section"]}\n\n```{{toctree}}\n:maxdepth: 1\n\n' + \
                              '\n'.join(body + list(pages(e.get('contents', [])))) + '\n```\n'
                yield _doc(stub)
            else: yield _doc(e['href'])
    trees, loose = [], []
    for e in contents:
        if isinstance(e, dict) and 'section' in e:
            entries = ([_doc(e['href'])] if 'href' in e else []) + list(pages(e.get('contents', [])))
            trees.append(f'```{{toctree}}\n:hidden:\n:caption: {e["section"]}\n\n' + '\n'.join(entries) + '\n```')
        else: loose.extend(p for p in pages([e]) if p != '/index')
    if loose: trees.insert(0, '```{toctree}\n:hidden:\n\n' + '\n'.join(loose) + '\n```')
    return trees


def _write(path, text):
    "Write only what changed, so that Sphinx re-reads only the pages that changed."
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding='utf-8') != text: path.write_text(text, encoding='utf-8')


def stage(src):
    "Stage the site's sources in `src`: the rendered notebooks, the nested sections' pages, the navigation."
    pages, stubs = {}, {}
    trees = navigation(_yml('sidebar.yml')['website']['sidebar']['contents'], stubs)
    for rel in rendered():
        pages[rel] = stage_notebook(json.loads((NBS / rel).read_text(encoding='utf-8')))
    pages['index.ipynb']['cells'].extend(_md(t, f'navigation{i}') for i, t in enumerate(trees))
    texts = {rel: json.dumps(nb, indent=1, ensure_ascii=False) for rel, nb in pages.items()} | stubs
    for rel, text in texts.items(): _write(src / rel, text)
    for old in src.rglob('*'):
        if old.is_file() and old.relative_to(src).as_posix() not in texts: old.unlink()


def build(out, work, jobs=2):
    "Stage the notebooks in `work`/src, build the site in `work`/html (myst-nb writes beside it), copy it to `out`."
    src, html = work / 'src', work / 'html'
    stage(src)
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-j', str(jobs), '-c', str(CONF),
           '-d', str(work / 'doctrees'), str(src), str(html)]
    subprocess.run(cmd, check=True)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(html, out)
    return out / 'index.html'


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, default=ROOT / '_docs')
    p.add_argument('--work', type=Path, default=ROOT / '_proc' / 'site')
    p.add_argument('--jobs', type=int, default=2)
    a = p.parse_args()
    print(build(a.out.resolve(), a.work.resolve(), a.jobs))
