"""hfrae.assignments.grade_class on a whole class in one run: right answers, untouched exercises, a typical mistake, an
endless loop, a broken file, a missing function, a notebook that tries to forge its grade or to touch its folder. Every
row gets the right pass/fail and message; nothing is printed; the students' folders are left as they were."""
import csv, json, shutil
from pathlib import Path

import pytest

from hfrae.assignments import ASSIGNMENTS_DIR, ASSIGNMENT_CHECKS, GRADEBOOK_COLUMNS, grade_class, grade_summary

SOLUTIONS = ASSIGNMENTS_DIR / 'solutions'
TIMEOUT = 60   # Exercise 5 trains a model; the endless loop is stopped after this long


def _edited(nb_path, old, new):
    "The notebook's text with `old` replaced by `new` in its JSON (so `new` uses JSON escapes)."
    text = nb_path.read_text(encoding='utf-8')
    assert old in text, (nb_path, old)
    return text.replace(old, new)


def _code_cell_nb(*sources):
    return json.dumps({'cells': [{'cell_type': 'code', 'metadata': {}, 'outputs': [], 'execution_count': None,
                                  'source': s} for s in sources], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5})


@pytest.fixture(scope='module')
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp('class')
    sub = root / 'submissions'
    students = {s: sub / s for s in ('ada', 'bo', 'cy', 'dee', 'eve', 'fay', 'gus', 'hal')}
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
    forged = _code_cell_nb('import os, shutil\n', "for f in os.listdir('.'): os.remove(f)\n",
                           "open('../forged.txt', 'w').write('forged')\n",
                           'print(\'{"passed": true, "score": 1, "message": "forged"}\')\n', 'raise SystemExit(0)\n')
    (students['gus'] / '04_aupro.ipynb').write_text(forged)                        # tries to forge and to touch files
    (students['hal'] / '04_aupro.ipynb').write_text(_code_cell_nb('import os\n', 'os._exit(3)\n'))   # kills its process
    before = {p: p.read_bytes() for p in sub.rglob('*') if p.is_file()}
    out, feedback = root / 'gradebook.csv', root / 'feedback'
    rows = grade_class(sub, out, timeout=TIMEOUT, feedback=feedback, jobs=2)
    after = {p: p.read_bytes() for p in sub.rglob('*') if p.is_file()}
    book = {(r['student'], r['assignment']): r for r in csv.DictReader(out.open(encoding='utf-8'))}
    return dict(rows=rows, book=book, out=out, feedback=feedback, unchanged=before == after)


def _row(graded, student, assignment, passed):
    r = graded['book'][(student, assignment)]
    assert r['passed'] == str(passed), r
    return r['message']


def test_gradebook_has_one_row_per_notebook(graded):
    book = graded['book']
    assert len(book) == len(graded['rows']) == 5 + 5 + 1 + 1 + 1 + 1 + 1 + 1
    assert list(next(iter(csv.reader(graded['out'].open(encoding='utf-8'))))) == list(GRADEBOOK_COLUMNS)
    assert all(r['passed'] in ('0', '1') and '\n' not in r['message'] for r in book.values())


def test_right_answers_pass(graded):
    for name in ASSIGNMENT_CHECKS:
        assert _row(graded, 'ada', name, 1).startswith('passed all'), name
        assert graded['book'][('ada', name)]['score'] == '1.0'


def test_untouched_exercises_are_not_done_yet(graded):
    for name in ASSIGNMENT_CHECKS:
        assert _row(graded, 'bo', name, 0) == 'not done yet: NotImplementedError', name


def test_typical_mistake_gets_the_checks_diagnosis(graded):
    assert 'missing the ½ of eq. 5' in _row(graded, 'cy', '01_residual_maps', 0)


def test_endless_loop_runs_out_of_time(graded):
    assert _row(graded, 'dee', '02_loss', 0) == f'ran out of time after {TIMEOUT} s'


def test_broken_file_is_not_a_valid_notebook(graded):
    assert _row(graded, 'eve', '02_loss', 0).startswith('not a valid notebook')


def test_missing_function_is_named(graded):
    assert _row(graded, 'fay', '02_loss', 0) == 'the function my_loss is missing'


def test_forged_grade_and_file_access_do_not_count(graded):
    assert _row(graded, 'gus', '04_aupro', 0) == 'the function my_aupro is missing (cell 5 raised SystemExit: 0)'
    assert _row(graded, 'hal', '04_aupro', 0) == 'the notebook stopped the grader (exit code 3) before its checks ran'
    assert graded['unchanged'], "a student's notebook changed the submissions folder"
    assert graded['out'].read_text(encoding='utf-8').startswith('student,')


def test_feedback_per_student(graded):
    files = sorted(p.name for p in graded['feedback'].glob('*.md'))
    assert files == [f'{s}.md' for s in ('ada', 'bo', 'cy', 'dee', 'eve', 'fay', 'gus', 'hal')]
    cy = (graded['feedback'] / 'cy.md').read_text(encoding='utf-8')
    assert cy.startswith('# Feedback for cy') and '❌ not yet' in cy and 'missing the ½ of eq. 5' in cy
    ada = (graded['feedback'] / 'ada.md').read_text(encoding='utf-8')
    assert ada.count('✅ passed') == 5 and 'well done!' in ada


def test_summary_line(graded):
    line = grade_summary(graded['rows'], graded['out'])
    assert line.startswith('graded 16 notebook(s) of 8 student(s): 5 passed, 11 not yet') and '\n' not in line


def test_grade_class_prints_nothing_but_its_progress(tmp_path, capfd):
    (tmp_path / 'sub' / 'zed').mkdir(parents=True)
    (tmp_path / 'sub' / 'zed' / '02_loss.ipynb').write_text('not json')
    (tmp_path / 'sub' / 'zed' / 'notes.ipynb').write_text('{"cells": []}')
    rows = grade_class(tmp_path / 'sub', tmp_path / 'book.csv', timeout=5)
    out, err = capfd.readouterr()
    assert out == '' and 'grading: 100%' in err and '2/2' in err      # the progress bar only, on stderr
    grade_class(tmp_path / 'sub', tmp_path / 'book.csv', timeout=5, progress=False)
    assert capfd.readouterr() == ('', '')
    assert [(r['assignment'], r['passed']) for r in rows] == [('02_loss', 0), ('notes', 0)]
    assert rows[1]['message'].startswith('not one of the assignments')


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match='no submissions folder'): grade_class(tmp_path / 'none')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no notebooks in'): grade_class(tmp_path / 'empty')
