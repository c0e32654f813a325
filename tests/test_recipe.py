"""The README's recipe (folder, model, fit, evaluate, checkpoint, predict) runs as written."""
import ast, os, re, subprocess, sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / 'README.md'


def _section():
    return README.read_text(encoding='utf-8').split('## Use it in an experiment', 1)[1].split('\n## ', 1)[0]


def readme_recipe():
    "The python block of the README's 'Use it in an experiment' section that trains (`fit(`)."
    section = _section()
    blocks = [b for b in re.findall(r'```python\n(.*?)```', section, re.S) if 'fit(' in b]
    assert len(blocks) == 1, blocks
    return blocks[0]


def readme_prints():
    "What the README says the recipe prints: the block after 'It prints'."
    return re.search(r'It prints.*?```\n(.*?)```', _section(), re.S).group(1)


def shapes(printed):
    "Each printed line as what precedes its dict and the dict's keys, in order."
    return [(l[:l.index('{')], list(ast.literal_eval(l[l.index('{'):]))) for l in printed.splitlines() if '{' in l]


def test_readme_recipe_runs_as_written(tmp_path):
    r = subprocess.run([sys.executable, '-c', readme_recipe()], cwd=tmp_path, capture_output=True, text=True,
                       timeout=900, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr[-3000:]
    assert shapes(r.stdout) == shapes(readme_prints()) != [], (r.stdout, readme_prints())
    assert (tmp_path / 'runs' / 'woven' / 'checkpoint.pt').is_file()
    assert (tmp_path / 'predictions' / 'scores.csv').read_text().startswith('path,score,verdict')
