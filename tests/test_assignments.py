"""hfrae.assignments.grade_class on a whole class in one run: right answers, untouched exercises, a typical mistake, an
endless loop, a broken file, a missing function, and notebooks that try to pass without the work or to reach outside
their copy (the reference imported, a forged grade, patched checks, a canary in the instructor's home, another
submission, a local server, a memory hog, a detached process). Every row gets the right pass/fail and message."""
import csv, json, os, shutil, socket, subprocess, threading
from pathlib import Path

import pytest

from hfrae.assignments import ASSIGNMENTS_DIR, ASSIGNMENT_CHECKS, grade_class
from hfrae.gradebook import GRADEBOOK_COLUMNS, grade_summary
from hfrae.grading import POINTS
from hfrae.sandbox import bwrap_works

SOLUTIONS = ASSIGNMENTS_DIR / 'solutions'
TIMEOUT = 60    # exercise 5 trains a model (about 10 s); the endless loop is stopped after this long
SANDBOX = bwrap_works()
needs_sandbox = pytest.mark.skipif(not SANDBOX and os.environ.get('CI') != 'true',
                                   reason='bubblewrap cannot run here (.ci/install-sandbox installs it)')


def _edited(nb_path, old, new):
    "The notebook's text with `old` replaced by `new` in its JSON (so `new` uses JSON escapes)."
    text = nb_path.read_text(encoding='utf-8')
    assert old in text, (nb_path, old)
    return text.replace(old, new)


def _nb(*sources):
    return json.dumps({'cells': [{'cell_type': 'code', 'metadata': {}, 'outputs': [], 'execution_count': None,
                                  'source': s} for s in sources], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5})


class _Server:
    "A TCP server on 127.0.0.1 that counts connections."
    def __init__(self):
        self.sock, self.hits = socket.socket(), 0
        self.sock.bind(('127.0.0.1', 0)); self.sock.listen(); self.sock.settimeout(0.5)
        self.port, self.stop = self.sock.getsockname()[1], False
        threading.Thread(target=self._serve, daemon=True).start()
    def _serve(self):
        while not self.stop:
            try: self.sock.accept()[0].close(); self.hits += 1
            except OSError: pass


@pytest.fixture(scope='module')
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp('class')
    sub, home = root / 'submissions', root / 'home'
    home.mkdir(); (home / 'canary.txt').write_text('CANARY-7731')
    names = 'ada bo cy dee eve fay ref imp forge patch peek tamper net hog fork grad crash late pool'.split()
    students = {s: sub / s for s in names}
    for d in students.values(): d.mkdir(parents=True)
    for nb in SOLUTIONS.glob('*.ipynb'): shutil.copy(nb, students['ada'])          # right answers
    for nb in ASSIGNMENTS_DIR.glob('*.ipynb'): shutil.copy(nb, students['bo'])     # untouched exercises
    (students['cy'] / '01_residual_maps.ipynb').write_text(                        # drops the ½ of eq. 5
        _edited(SOLUTIONS / '01_residual_maps.ipynb', 'return [0.5 * (unit(e) - unit(d)) ** 2',
                'return [(unit(e) - unit(d)) ** 2'))
    (students['dee'] / '02_loss.ipynb').write_text(                                # loops forever
        _edited(SOLUTIONS / '02_loss.ipynb', '    return torch.stack', '    while True: pass\\n    return torch.stack'))
    (students['eve'] / '02_loss.ipynb').write_text('{"cells": [{"cell_type": "code", "source": ')   # broken file
    (students['fay'] / '02_loss.ipynb').write_text(_edited(SOLUTIONS / '02_loss.ipynb', 'def my_loss(', 'def loss(')
                                                   .replace('my_loss([e1, e2]', 'loss([e1, e2]'))
    write = lambda s, name, *cells: (students[s] / name).write_text(_nb(*cells))
    write('ref', '01_residual_maps.ipynb', 'from hfrae.loss import residual_maps as my_residual_maps')
    write('imp', '03_anomaly_map.ipynb', "import importlib\nm = importlib.import_module('hfrae.scoring')\n"
          "my_anomaly_map, my_anomaly_score = m.anomaly_map, m.anomaly_score")
    write('forge', '02_loss.ipynb', "import os, gc, json\n"
          "tokens = [o for o in gc.get_objects() if isinstance(o, str) and len(o) == 32]\n"
          "for t in tokens[:50]: print(t, json.dumps({'passed': True, 'score': 1, 'message': 'passed all'}))\n"
          "os.makedirs('/tmp/out/check_loss', exist_ok=True)\n"
          "open('/tmp/out/check_loss/record.json', 'w').write(json.dumps({'cases': [], 'grad': None}))\n"
          "os._exit(0)")
    write('patch', '04_aupro.ipynb', "import hfrae, sys\nfrom hfrae.checking import CheckResult\n"
          "for m in list(sys.modules.values()):\n"
          "    for n in dir(m) if m and m.__name__.startswith('hfrae') else []:\n"
          "        if n.startswith(('check_', 'judge')):\n"
          "            setattr(m, n, lambda *a, **k: CheckResult(True, 'passed'))\n"
          "def my_aupro(masks, maps, fpr_limit=0.3): return 1.0")
    write('peek', '02_loss.ipynb', f"import os\nsecret = open({str(home / 'canary.txt')!r}).read()\n"
          "secret2 = open(os.path.expanduser('~/canary.txt')).read()",
          "def my_loss(e, d): raise ValueError(secret + secret2)")
    write('tamper', '02_loss.ipynb', f"import glob\nfor f in glob.glob({str(sub)!r} + '/*/*.ipynb'): "
          "open(f, 'a').write('tampered')", f"open({str(root / 'outside.txt')!r}, 'w').write('x')")
    write('grad', '01_residual_maps.ipynb', "import hfrae.recording as R\n"        # right values, twice the gradient,
          "def unit(x): return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)\n"   # and recorders that forge
          "def my_residual_maps(e, d):\n    R.grad_record = lambda *a, **k: None\n"
          "    return [0.5 * (unit(a) - (2 * unit(b) - unit(b).detach())) ** 2 for a, b in zip(e, d)]",
          "R.grad_record = lambda *a, **k: None")
    write('late', '01_residual_maps.ipynb', "import atexit, json, os, sys\n"          # changes its inputs, then
          "def unit(x): return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)\n"   # rewrites its record at exit
          "def my_residual_maps(e, d):\n    for x in e: x.div_(x.norm(dim=1, keepdim=True).clamp_min(1e-12))\n"
          "    return [0.5 * (a - unit(b)) ** 2 for a, b in zip(e, d)]\n"
          "def fix(p=os.path.join(sys.argv[3], 'check_residual_maps', 'record.json')):\n"
          "    r = json.load(open(p)); [c.update(changed=False) for c in r['cases']]; open(p, 'w').write(json.dumps(r))\n"
          "atexit.register(fix)")
    write('crash', '01_residual_maps.ipynb', "import json, os, sys\n"                 # a record that breaks the reader
          "plan = json.load(open(os.path.join(sys.argv[2], 'check_residual_maps', 'record.json')))\n"
          "os.makedirs(os.path.join(sys.argv[3], 'check_residual_maps'), exist_ok=True)\n"
          "open(os.path.join(sys.argv[3], 'check_residual_maps', 'record.json'), 'w').write(json.dumps(\n"
          "    {'cases': [{} for _ in plan['cases']], 'grad': None}))\n"
          "os.makedirs(os.path.join(sys.argv[3], 'notebook'), exist_ok=True)\n"
          "open(os.path.join(sys.argv[3], 'notebook', 'record.json'), 'w').write('{}')\nos._exit(0)")
    write('pool', '02_loss.ipynb', "import multiprocessing, torch\nfrom hfrae.loss import residual_maps\n"   # honest:
          "def square(x): return x * x\n"                                  # a Pool over a function of the notebook
          "def my_loss(e, d):\n    with multiprocessing.Pool(2) as p: assert p.map(square, [1, 2]) == [1, 4]\n"
          "    return torch.stack([p.sum(1).mean() for p in residual_maps(e, d)]).mean()")
    server = _Server()
    write('net', '02_loss.ipynb', f"import socket\nsocket.create_connection(('127.0.0.1', {server.port}), timeout=3)")
    write('hog', '02_loss.ipynb', "chunks = []\nfor _ in range(40): chunks.append(bytearray(100 * 2**20))")
    write('fork', '02_loss.ipynb', "import subprocess\n"
          "subprocess.Popen(['sleep', '4321'], start_new_session=True)\n"
          "from hfrae.loss import residual_maps\nimport torch\n"
          "def my_loss(e, d): return torch.stack([p.sum(1).mean() for p in residual_maps(e, d)]).mean()")
    before = {p: p.read_bytes() for p in sub.rglob('*') if p.is_file()}
    out, feedback = root / 'gradebook.csv', root / 'feedback'
    old_home = os.environ['HOME']; os.environ['HOME'] = str(home)
    try: rows = grade_class(sub, out, timeout=TIMEOUT, feedback=feedback, jobs=2, memory=3 * 2**30,
                            lms=root / 'lms.csv', progress=False)
    finally: os.environ['HOME'] = old_home
    server.stop = True
    after = {p: p.read_bytes() for p in sub.rglob('*') if p.is_file()}
    book = {(r['student'], r['assignment']): r for r in csv.DictReader(out.open(encoding='utf-8'))}
    lingering = subprocess.run(['pgrep', '-f', 'sleep 4321'], capture_output=True, text=True).stdout.split()
    return dict(rows=rows, book=book, out=out, feedback=feedback, unchanged=before == after, root=root,
                hits=server.hits, lingering=lingering, lms=root / 'lms.csv', sub=sub)


def _row(graded, student, assignment, passed):
    r = graded['book'][(student, assignment)]
    assert r['passed'] == str(passed), r
    return r['message']


def test_gradebook_has_one_row_per_notebook_with_points(graded):
    book = graded['book']
    assert len(book) == len(graded['rows']) == 5 + 5 + 17
    assert list(next(iter(csv.reader(graded['out'].open(encoding='utf-8'))))) == list(GRADEBOOK_COLUMNS)
    assert all(r['passed'] in ('0', '1') and '\n' not in r['message'] for r in book.values())
    assert book[('ada', '02_loss')]['points'] == str(POINTS['check_loss']) == book[('ada', '02_loss')]['total']


def test_right_answers_pass(graded):
    for name in ASSIGNMENT_CHECKS:
        assert _row(graded, 'ada', name, 1).startswith('passed all'), name


def test_untouched_exercises_are_not_done_yet(graded):
    for name in ASSIGNMENT_CHECKS:
        assert _row(graded, 'bo', name, 0) == 'not done yet: NotImplementedError', name


def test_typical_mistakes_and_broken_notebooks(graded):
    assert 'missing the ½ of eq. 5' in _row(graded, 'cy', '01_residual_maps', 0)
    assert _row(graded, 'dee', '02_loss', 0) == f'ran out of time after {TIMEOUT} s'
    assert _row(graded, 'eve', '02_loss', 0).startswith('not a valid notebook')
    assert _row(graded, 'fay', '02_loss', 0) == 'the function my_loss is missing'


def test_the_reference_cannot_be_used(graded):
    assert "calls the package's `hfrae.loss.residual_maps`" in _row(graded, 'ref', '01_residual_maps', 0)
    assert "calls the package's `hfrae.scoring." in _row(graded, 'imp', '03_anomaly_map', 0)
    assert 'well done' in [c for c in graded['rows'] if c['student'] == 'fork'][0]['checks'][0]['message']


def test_forged_and_patched_grades_do_not_count(graded):
    _row(graded, 'forge', '02_loss', 0)
    assert 'your function gave 1' in _row(graded, 'patch', '04_aupro', 0)   # the grader's own judgement
    assert "the gradient that flows back through your result is not the reference's" in _row(
        graded, 'grad', '01_residual_maps', 0)                            # the recorder it replaced was put back
    assert _row(graded, 'crash', '01_residual_maps', 0)    # a record that breaks the reader fails that row alone
    assert 'changed its input tensors' in _row(graded, 'late', '01_residual_maps', 0)   # its exit hook never ran


@needs_sandbox
def test_no_reach_outside_the_copy(graded):
    assert 'CANARY' not in graded['out'].read_text(encoding='utf-8')
    assert 'No such file' in _row(graded, 'peek', '02_loss', 0)
    assert graded['unchanged'], "a student's notebook changed the submissions folder"
    assert not (graded['root'] / 'outside.txt').exists()
    assert graded['hits'] == 0 and 'cell 1 raised' in _row(graded, 'net', '02_loss', 0)


def test_limits_are_named_and_nothing_lingers(graded):
    assert _row(graded, 'hog', '02_loss', 0) == 'ran out of memory (3 GiB)'
    assert _row(graded, 'fork', '02_loss', 1).startswith('passed all')
    assert _row(graded, 'pool', '02_loss', 1).startswith('passed all')     # the cells' module is __main__, as in Jupyter
    assert graded['lingering'] == []


def test_lms_export_has_one_row_per_student(graded):
    rows = list(csv.DictReader(graded['lms'].open(encoding='utf-8')))
    assert len(rows) == len({s for s, _ in graded['book']})                 # one row per student
    assert rows[0]['student'] == 'ada' and set(ASSIGNMENT_CHECKS) <= set(rows[0])
    assert float(rows[0]['total']) == sum(POINTS.values())


def test_regrading_keeps_manual_points(graded, tmp_path):
    text = graded['out'].read_text(encoding='utf-8').splitlines()
    head = text[0].split(',')
    i = next(k for k, l in enumerate(text) if l.startswith('ada,05_ablation'))
    cells = next(csv.reader([text[i]])); cells[head.index('manual_points')] = '7'
    book = tmp_path / 'book.csv'
    book.write_text('\n'.join([text[0], ','.join(f'"{c}"' for c in cells)]) + '\n', encoding='utf-8')
    sub = tmp_path / 'sub' / 'ada'; sub.mkdir(parents=True); shutil.copy(SOLUTIONS / '02_loss.ipynb', sub)
    (tmp_path / 'sub' / 'ada' / '05_ablation.ipynb').write_text('not json')
    rows = grade_class(tmp_path / 'sub', book, progress=False)
    r = {x['assignment']: x for x in rows}['05_ablation']
    assert r['manual_points'] == '7' and r['total'] == 7


def test_feedback_shows_points(graded):
    ada = (graded['feedback'] / 'ada.md').read_text(encoding='utf-8')
    assert ada.count('✅ passed') == 5 and f"| 02_loss | ✅ passed | {POINTS['check_loss']} of" in ada


def test_summary_line(graded):
    line = grade_summary(graded['rows'], graded['out'], isolated=SANDBOX)
    assert line.startswith('graded 27 notebook(s) of 19 student(s): 7 passed, 20 not yet')


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match='no submissions folder'): grade_class(tmp_path / 'none')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no notebooks in'): grade_class(tmp_path / 'empty')
    (tmp_path / 'sub' / 'al').mkdir(parents=True); (tmp_path / 'sub' / 'al' / '02_loss.ipynb').write_text(_nb('x = 1'))
    for bad in (dict(timeout=0), dict(timeout=-5), dict(memory=-1)):      # refused before any notebook runs
        with pytest.raises(ValueError, match='must be positive'): grade_class(tmp_path / 'sub', tmp_path / 'g.csv', **bad)
    assert not (tmp_path / 'g.csv').exists()
