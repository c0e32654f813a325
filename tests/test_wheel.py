"""The wheel as a user gets it: built from the sources, installed without dependencies into a folder of its own, and
used from elsewhere. It must hand out the exercise notebooks, carry no solutions (asking for them gives
a one-line error) and run the CLI."""
import json, os, shutil, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ['setup.py', 'settings.ini', 'README.md', 'MANIFEST.in', 'hfrae', 'nbs/assignments']


def _run(cmd, cwd, env=None, timeout=600):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    "A folder with the wheel installed into it (`pip install --no-deps --target`), and the wheel's path."
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'   # a copy of what the build needs, so that the build leaves the working tree alone
    for p in SOURCES:
        (src / p).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / p).is_dir() else shutil.copy
        copy(ROOT / p, src / p, **({'ignore': shutil.ignore_patterns('__pycache__')} if (ROOT / p).is_dir() else {}))
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '--no-input']
    _run(pip + ['wheel', '--no-deps', '--no-build-isolation', '-w', tmp / 'dist', src], cwd=tmp)
    wheel, = (tmp / 'dist').glob('hfrae-*.whl')
    _run(pip + ['install', '--no-deps', '--target', tmp / 'site', wheel], cwd=tmp)
    return tmp / 'site', wheel


def _python(site, code, cwd):
    env = {**os.environ, 'PYTHONPATH': str(site), 'OMP_NUM_THREADS': '1'}
    return _run([sys.executable, '-c', code], cwd=cwd, env=env)


def test_wheel_holds_the_notebooks(installed):
    _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    exercises = [n for n in names
                 if n.startswith('hfrae/assignments_data/') and n.count('/') == 2 and n.endswith('.ipynb')]
    assert len(exercises) >= 5, names
    assert not [n for n in names if 'solutions' in n], names
    for n in exercises: assert b'### BEGIN SOLUTION' not in zipfile.ZipFile(wheel).read(n), n


def test_installed_wheel_hands_out_exercises_only(installed, tmp_path):
    site, _ = installed
    code = ("import json, hfrae; from hfrae.assignments import copy_assignments, assignments_dir; "
            "paths = copy_assignments('hw'); "
            "print(json.dumps(dict(package=hfrae.__file__, src=str(assignments_dir()), "
            "paths=[str(p) for p in paths])))")
    out = json.loads(_python(site, code, tmp_path).strip().splitlines()[-1])
    assert Path(out['package']).is_relative_to(site) and Path(out['src']).is_relative_to(site), out
    paths = [Path(p) for p in out['paths']]
    assert len(paths) >= 5 and all((tmp_path / 'hw' / p.name).exists() for p in paths)
    assert not (tmp_path / 'hw' / 'solutions').exists()
    for p in paths:
        text = (tmp_path / 'hw' / p.name).read_text(encoding='utf-8')
        assert '### BEGIN SOLUTION' not in text and 'NotImplementedError' in text, p


def test_installed_wheel_refuses_solutions_in_one_line(installed, tmp_path):
    site, _ = installed
    env = {**os.environ, 'PYTHONPATH': str(site), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([site / 'bin' / 'hfrae', 'assignments', 'copy', 't', '--solutions'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'never carries them' in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / 't' / 'solutions').exists()


def test_clone_copies_solutions(tmp_path):
    out = _run([sys.executable, '-c', "from hfrae.assignments import copy_assignments; "
                "print(len(copy_assignments('t', solutions=True)))"], cwd=tmp_path,
               env={**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'})
    assert int(out.split()[-1]) >= 10
    sols = list((tmp_path / 't' / 'solutions').glob('*.ipynb'))
    assert sols and all('### BEGIN SOLUTION' in p.read_text(encoding='utf-8') for p in sols)


def test_installed_wheel_runs_the_cli(installed, tmp_path):
    site, _ = installed
    env = {**os.environ, 'PYTHONPATH': str(site), 'OMP_NUM_THREADS': '1'}
    script = site / 'bin' / 'hfrae'   # the console script pip wrote next to the package
    out = _run([script, 'demo', '--help'], cwd=tmp_path, env=env)
    assert out.startswith('usage: hfrae demo'), out
    out = _run([sys.executable, '-c', 'import sys; from hfrae.cli import main; sys.exit(main())', 'demo', '--help'],
               cwd=tmp_path, env=env)
    assert out.startswith('usage:') and 'demo' in out, out
    out = _python(site, "import hfrae; from hfrae.core import *; print(hfrae.__file__, check_loss.__module__)",
                  tmp_path)
    package, module = out.split()[-2:]
    assert Path(package).is_relative_to(site) and module == 'hfrae.grading', out


def test_wheel_ships_a_real_defect_kind_with_its_licence(installed, tmp_path):
    site, wheel = installed
    names = zipfile.ZipFile(wheel).infolist()
    piped = [n for n in names if n.filename.startswith('hfrae/piped_data/')]
    assert any(n.filename.endswith('ATTRIBUTION.md') for n in piped), [n.filename for n in piped][:5]
    assert sum(n.file_size for n in piped) <= 6_000_000
    out = _python(site, "from hfrae.runs import demo_category\n"
                        "tr, te = demo_category('PA_GLA01_TL', 64)\n"
                        "it = te[-1]\n"
                        "print(len(tr), len(te), sum(te.labels), tuple(it['image'].shape), int(it['mask'].sum() > 0))",
                  cwd=tmp_path)
    assert out.split() == ['36', '60', '48', '(3,', '64,', '64)', '1'], out
