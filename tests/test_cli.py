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

def test_corrupt_checkpoint_is_refused_in_one_line(category, tmp_path):
    run = tmp_path / 'run'
    assert hfrae('train', '--data', category, '--epochs', 1, '--image-size', 64, '--out', run).returncode == 0
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

def test_train_then_test_json(category, tmp_path):
    run, out = tmp_path / 'run', tmp_path / 'metrics.json'
    assert hfrae('train', '--data', category, '--epochs', 2, '--image-size', 64, '--out', run).returncode == 0
    r = hfrae('test', '--run', run, '--data', category, '--json', out)
    assert r.returncode == 0, r.stderr
    m = json.loads(out.read_text())
    assert m['n_images'] == 6 and all(0 <= m[k] <= 1 for k in ('image_auroc', 'pixel_auroc', 'aupro'))
    assert json.loads(r.stdout)['n_images'] == 6

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
