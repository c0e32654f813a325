"""The house's limits, kept from coming back: module, cell and line sizes, the command's imports, one backbone."""
import ast, json, statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB, NBS = ROOT / 'hfrae', ROOT / 'nbs'


def _tree(name): return ast.parse((LIB / f'{name}.py').read_text(encoding='utf-8'))


def _imported(tree, package='hfrae'):
    "Every module `tree` imports, lazy imports inside functions included, relative ones made absolute."
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import): out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or '' if not node.level else '.'.join([package] + ([node.module] if node.module else []))
            out |= {f'{base}.{a.name}' for a in node.names} if base == package else {base}
    return out


def exported_cell_sizes():
    "Non-blank lines, `#|` directives left out, of every exported cell of every chapter."
    sizes = {}
    for nb in sorted(NBS.glob('*.ipynb')):
        for i, cell in enumerate(json.loads(nb.read_text(encoding='utf-8'))['cells']):
            lines = ''.join(cell['source']).splitlines()
            exported = any(l.replace(' ', '').startswith('#|export') for l in lines)
            if cell['cell_type'] != 'code' or not exported: continue
            sizes[f'{nb.name}[{i}]'] = sum(1 for l in lines if l.strip() and not l.lstrip().startswith('#|'))
    return sizes


def test_no_module_over_400_lines():
    big = {p.name: n for p in LIB.glob('*.py') if p.name != '_modidx.py'
           and (n := len(p.read_text(encoding='utf-8').splitlines())) > 400}
    assert not big, big


def test_exported_cells_are_small():
    sizes = exported_cell_sizes()
    assert statistics.median(sizes.values()) <= 10, statistics.median(sizes.values())
    big = {k: n for k, n in sizes.items() if n > 40}
    assert not big, big


def test_cli_imports_only_runs_from_the_package():
    ours = {m for m in _imported(_tree('cli')) if m.split('.')[0] == 'hfrae'}
    assert ours == {'hfrae.runs'}, ours


def test_code_lines_fit_120_characters():
    "Every line of every chapter's code cells fits a screen: at most 120 characters."
    long = [f'{nb.name}: {l[:60]}' for nb in sorted(NBS.glob('*.ipynb'))
            for cell in json.loads(nb.read_text(encoding='utf-8'))['cells'] if cell['cell_type'] == 'code'
            for l in ''.join(cell['source']).splitlines() if len(l) > 120]
    assert not long, long


def test_metrics_do_not_plot():
    assert not {m for m in _imported(_tree('metrics')) if m.split('.')[0] == 'matplotlib'}


def _default_values(tree):
    "The constants given as defaults: of function arguments, and of `default=` keywords (argparse)."
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from (d for d in node.args.defaults + node.args.kw_defaults if d is not None)
        if isinstance(node, ast.keyword) and node.arg == 'default': yield node.value


def test_the_default_backbone_is_written_once():
    from hfrae.settings import DEFAULT_BACKBONE
    as_default = [p.name for p in LIB.glob('*.py') for d in _default_values(ast.parse(p.read_text(encoding='utf-8')))
                  if isinstance(d, ast.Constant) and d.value == DEFAULT_BACKBONE]
    assert not as_default, as_default
    named = [p.name for p in LIB.glob('*.py') for n in ast.walk(ast.parse(p.read_text(encoding='utf-8')))
             if isinstance(n, ast.Assign) and any(getattr(t, 'id', None) == 'DEFAULT_BACKBONE' for t in n.targets)]
    assert named == ['settings.py'], named
