"""Training under torchrun: two CPU processes (gloo) train one decoder, only the first writes, resuming needs the same
number of processes."""
import json, os, subprocess, sys
from pathlib import Path
import torch
from hfrae.synthetic import write_synthetic_mvtec

BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS='1')

def train(folder, run, epochs, nproc):
    launcher = [str(BIN / 'torchrun'), '--standalone', f'--nproc_per_node={nproc}'] if nproc > 1 else [sys.executable]
    cmd = launcher + [str(BIN / 'hfrae'), 'train', '--data', str(folder), '--epochs', str(epochs), '--image-size', '64',
                      '--out', str(run)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)

def test_two_processes_train_resume_and_record_world_size(tmp_path):
    (folder,) = write_synthetic_mvtec(tmp_path, kinds=('woven',), n_train=16, n_test=4, image_size=64)
    run = tmp_path / 'run'
    r = train(folder, run, 2, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('trained:') == 1, r.stdout                   # the first process reports, the other is quiet
    ckpt = torch.load(run / 'checkpoint.pt', weights_only=True)
    assert (ckpt['train']['world_size'], ckpt['epoch'], ckpt['train']['n_train']) == (2, 2, 12)
    assert ckpt['threshold']['n_images'] == 4
    assert json.loads((run / 'run.json').read_text())['world_size'] == 2
    r = train(folder, run, 3, nproc=2)                                  # resume under the same world size
    assert r.returncode == 0, r.stderr[-3000:]
    assert [h['epoch'] for h in json.loads((run / 'run.json').read_text())['history']] == [1, 2, 3]
    r = train(folder, run, 4, nproc=1)                                  # one process cannot resume a two-process run
    assert r.returncode == 2 and 'resume with as many' in r.stderr, r.stderr
