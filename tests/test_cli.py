"""The `hfrae` command as a user runs it: in a subprocess, killed mid-training, fed broken files."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from hfrae.synthetic import write_synthetic_mvtec

HFRAE = [sys.executable, '-c', 'import sys; from hfrae.cli import main; sys.exit(main())']
ENV = dict(os.environ, OMP_NUM_THREADS='1')

def hfrae(*args, timeout=300):
    return subprocess.run(HFRAE + list(map(str, args)), capture_output=True, text=True, timeout=timeout, env=ENV)

@pytest.fixture(scope='module')
def category(tmp_path_factory):
    (folder,) = write_synthetic_mvtec(tmp_path_factory.mktemp('data'), kinds=('woven',), n_train=8, n_test=6,
                                      image_size=64)
    return folder

@pytest.fixture(scope='module')
def trained(category, tmp_path_factory):
    "One `hfrae train` run (two epochs at 64²) that the tests below read and never change."
    run = tmp_path_factory.mktemp('trained') / 'run'
    r = train(category, run, epochs=2)
    assert r.returncode == 0, r.stderr
    return run

@pytest.mark.parametrize('cmd', [[], ['demo'], ['train'], ['test'], ['predict'], ['export'], ['download'],
                                 ['reproduce'], ['assignments']])
def test_help_everywhere(cmd, capsys):
    from hfrae.cli import main
    with pytest.raises(SystemExit) as e: main(cmd + ['--help'])
    assert e.value.code == 0 and 'usage: hfrae' in capsys.readouterr().out

def test_console_script_runs():
    r = subprocess.run([str(Path(sys.executable).parent / 'hfrae'), '--help'], capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode == 0 and 'demo' in r.stdout, r.stderr

def test_killed_training_resumes(category, tmp_path):
    run = tmp_path / 'run'
    p = subprocess.Popen(HFRAE + ['train', '--data', str(category), '--epochs', '400', '--image-size', '64',
                                  '--out', str(run)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    ckpt, deadline = run / 'checkpoint.pt', time.time() + 240
    while not ckpt.exists() and time.time() < deadline and p.poll() is None: time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL); p.wait()
    assert ckpt.exists(), 'no checkpoint written before the kill'
    import torch
    done = torch.load(ckpt, weights_only=True)['epoch']
    assert 1 <= done < 400
    r = hfrae('train', '--data', category, '--epochs', done + 1, '--image-size', 64, '--out', run)
    assert r.returncode == 0, r.stderr
    history = json.loads((run / 'run.json').read_text())['history']
    # resumed: the earlier epochs were not trained again
    assert [h['epoch'] for h in history] == list(range(1, done + 2))

def test_corrupt_checkpoint_is_refused_in_one_line(category, trained, tmp_path):
    import shutil
    run = shutil.copytree(trained, tmp_path / 'run')
    data = (run / 'checkpoint.pt').read_bytes()
    (run / 'checkpoint.pt').write_bytes(data[: len(data) // 3])
    r = hfrae('test', '--run', run, '--data', category)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'not a readable hfrae checkpoint' in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr

def test_bad_folder_and_failed_download_are_one_line(tmp_path):
    r = hfrae('train', '--data', tmp_path / 'missing')
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'missing' in r.stderr, r.stderr
    r = hfrae('download', 'mvtec', '--root', tmp_path, '--category', 'bottle', '--url',
              'http://127.0.0.1:9/none.tar.xz', timeout=120)
    assert r.returncode == 2 and r.stderr.count('\n') == 1, r.stderr
    assert not [p for p in tmp_path.rglob('*') if p.is_file()], 'a failed download left files behind'

def test_train_then_test_json(category, trained, tmp_path):
    run, out = trained, tmp_path / 'metrics.json'
    r = hfrae('test', '--run', run, '--data', category, '--json', out, '--quiet')
    assert r.returncode == 0 and r.stderr == '', r.stderr                # no progress bars, no warning
    m = json.loads(out.read_text())
    assert m['n_images'] == 6 and all(0 <= m[k] <= 1 for k in ('image_auroc', 'pixel_auroc', 'aupro'))
    table = r.stdout.splitlines()
    assert table[0].split() == ['metric', 'paper*', 'mean', 'none'] and table[3].startswith('AUPRO'), r.stdout
    assert f"{m['aupro']:.3f}" in table[3] and 'verdict at' in r.stdout and str(out) in r.stdout

def test_reproduce_table2_on_tiny_idx_files(tmp_path):
    "Table 2's protocol end to end on tiny Fashion-MNIST files in the real format: two normal classes, one epoch."
    import numpy as np
    from hfrae.data import unpack_idx, write_idx
    from hfrae.runs import reproduce_one_class
    rng, src = np.random.default_rng(0), tmp_path / 'deb'
    src.mkdir()
    for split, n in (('train', 12), ('t10k', 8)):
        labels = np.arange(n) % 2                                       # classes 0 and 1 only
        images = rng.integers(0, 60, (n, 28, 28))
        images[labels == 1, 8:20, 8:20] = 255                           # class 1 has a bright square
        write_idx(src / f'{split}-images-idx3-ubyte.gz', images)
        write_idx(src / f'{split}-labels-idx1-ubyte.gz', labels)
    unpack_idx(src, tmp_path / 'root')
    res = reproduce_one_class('fashion_mnist', tmp_path / 'root', tmp_path / 'runs', epochs=1, classes=(0, 1),
                              progress=False)
    assert sorted(res) == [0, 1] and all(0 <= v <= 1 for v in res.values())
    table = (tmp_path / 'runs' / 'efficientnet_lite0' / 'fashion_mnist' / 'table2.md').read_text()
    assert ('| 0 |' in table and '| mean |' in table and 'resnet18 0.939' in table
            and 'padded to 32²' in table), table
    again = reproduce_one_class('fashion_mnist', tmp_path / 'root', tmp_path / 'runs', epochs=1, classes=(0, 1),
                                progress=False)
    assert again == res                                                  # finished classes are reused, not retrained
    with pytest.raises(ValueError, match='another --out folder'):        # but not with other settings
        reproduce_one_class('fashion_mnist', tmp_path / 'root', tmp_path / 'runs', epochs=2, classes=(0, 1),
                            progress=False)
    # nor other inputs
    with pytest.raises(ValueError, match='made from padded images: use another --out folder'):
        reproduce_one_class('fashion_mnist', tmp_path / 'root', tmp_path / 'runs', epochs=1, pad=False, classes=(0, 1),
                            progress=False)
    parallel = reproduce_one_class('fashion_mnist', tmp_path / 'root', tmp_path / 'runs2', epochs=1, classes=(0, 1),
                                   jobs=2, progress=False)
    assert parallel == res                                               # two processes: the same table
    assert (tmp_path / 'runs2' / 'efficientnet_lite0' / 'fashion_mnist' / 'table2.md').read_text() == table


def train(data, run, epochs=1, *more):
    "`hfrae train` at 64², quietly."
    return hfrae('train', '--data', data, '--epochs', epochs, '--image-size', 64, '--out', run, '--quiet', *more)

def test_cli_imports_no_torch():
    "What makes `hfrae --help` quick: the command's module loads no torch (timed in the README, not here)."
    r = subprocess.run([sys.executable, '-c', "import sys, hfrae.cli; print(sorted(m for m in sys.modules "
                        "if m.split('.')[0] in ('torch', 'numpy', 'PIL', 'matplotlib', 'scipy')))"],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0 and r.stdout.strip() == '[]', (r.stdout, r.stderr)

def test_api_and_cli_agree(category, trained, tmp_path):
    "`HFRAE()` + `fit` + `evaluate` give what `hfrae train` + `hfrae test` give: one set of defaults."
    from hfrae.core import HFRAE, MVTecFolder, fit, evaluate
    run, out = trained, tmp_path / 'm.json'
    assert hfrae('test', '--run', run, '--data', category, '--json', out, '--quiet').returncode == 0
    cli = json.loads(out.read_text())
    model = HFRAE(image_size=64)
    fit(model, MVTecFolder(category, 'train', 64), epochs=2, progress=False)
    api = evaluate(model, MVTecFolder(category, 'test', 64), progress=False)
    for k in ('image_auroc', 'pixel_auroc', 'aupro', 'threshold'):     # equal with the CLI's one thread; with more
        assert api[k] == pytest.approx(cli[k], rel=1e-3, abs=1e-6), k  # here, rounding that lr 0.4 grows (1e-5 seen)
    assert json.loads((run / 'run.json').read_text())['config'] == model.config

def test_run_json_records_what_was_trained_on(category, trained):
    run = trained
    record = json.loads((run / 'run.json').read_text())
    import torch
    ckpt = torch.load(run / 'checkpoint.pt', weights_only=True)
    assert (record['n_images'], record['n_train'], record['n_held_out']) == (8, 6, 2)      # a quarter of 8 held out
    assert (ckpt['train']['n_train'], ckpt['train']['n_held_out'], ckpt['threshold']['n_images']) == (6, 2, 2)
    assert ckpt['image_size'] == [64, 64] and record['data'] == str(category.resolve())

def test_missing_masks_and_other_folder_warn(category, trained, tmp_path):
    import shutil
    run, bare = trained, tmp_path / 'bare'
    shutil.copytree(category, bare); shutil.rmtree(bare / 'ground_truth')
    r = hfrae('test', '--run', run, '--data', bare, '--json', tmp_path / 'm.json', '--quiet')
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 2 and all(l.startswith('hfrae test: warning: ') for l in lines), r.stderr
    assert str(bare / 'ground_truth') in r.stderr and str(category.resolve()) in r.stderr and str(bare) in r.stderr
    m = json.loads((tmp_path / 'm.json').read_text())
    assert m['pixel_auroc'] is None and 'ground_truth' in m['missing']['pixel_auroc']
    r = hfrae('test', '--run', run, '--data', bare, '--json', tmp_path / 'm.json', '--quiet', '--force')
    assert r.stderr.count('warning') == 1 and 'no masks' in r.stderr, r.stderr          # --force: the masks' only
    other = tmp_path / 'other'; shutil.copytree(category, other)
    r = hfrae('predict', '--run', run, '--out', tmp_path / 'pred', '--quiet', other / 'test' / 'good')
    assert r.returncode == 0 and 'was trained on' in r.stderr and str(other.resolve()) in r.stderr, r.stderr
    r = hfrae('predict', '--run', run, '--out', tmp_path / 'pred', '--quiet', '--force', other / 'test' / 'good')
    assert r.returncode == 0 and r.stderr == '', r.stderr

def test_heat_maps_at_the_images_size(trained, tmp_path):
    import numpy as np
    from PIL import Image
    run = trained
    Image.fromarray((np.random.default_rng(0).random((207, 333, 3)) * 255).astype(np.uint8)).save(tmp_path / 'a.png')
    r = hfrae('predict', '--run', run, '--out', tmp_path / 'pred', tmp_path / 'a.png', '--quiet')
    assert r.returncode == 0, r.stderr
    w, h = Image.open(tmp_path / 'pred' / 'a_heatmap.png').size
    assert w == 333 and 207 < h <= 207 + 20                              # the image's size, a colour bar below
    assert (tmp_path / 'pred' / 'scores.csv').read_text().splitlines()[0] == 'path,score,verdict,heat_max,heatmap,error'

def test_an_unreadable_file_is_skipped_and_named(trained, category, tmp_path):
    good = category / 'test' / 'good'
    (tmp_path / 'broken.png').write_bytes(b'not a PNG')
    r = hfrae('predict', '--run', trained, '--out', tmp_path / 'pred', good, tmp_path / 'broken.png', '--quiet')
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith('hfrae predict: warning: 1 of ') and 'broken.png' in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-2].split()[:2] == ['-', 'unreadable'] and lines[-2].endswith('broken.png'), r.stdout
    rows = (tmp_path / 'pred' / 'scores.csv').read_text().splitlines()
    assert len(rows) == 1 + len(list(good.iterdir())) + 1 and 'cannot read image' in rows[-1], rows
    r = hfrae('predict', '--run', trained, '--out', tmp_path / 'pred2', tmp_path / 'broken.png', '--quiet')
    assert r.returncode == 2 and r.stderr.startswith('hfrae predict: error: cannot read image'), r.stderr

def test_weights_from_a_local_file(category, tmp_path):
    from hfrae.encoder import lite_weights_path
    run = tmp_path / 'run'
    r = hfrae('train', '--data', category, '--epochs', 1, '--image-size', 64, '--out', run, '--quiet',
              '--weights', lite_weights_path('efficientnet_lite0'))
    assert r.returncode == 0, r.stderr
    weights = str(lite_weights_path('efficientnet_lite0'))
    assert json.loads((run / 'run.json').read_text())['config']['weights'] == weights
    r = hfrae('train', '--data', category, '--out', tmp_path / 'r2', '--weights', tmp_path / 'nowhere.pth')
    assert r.returncode == 2 and 'weights file not found' in r.stderr and r.stderr.count('\n') == 1, r.stderr
