"""What the explorer's chapter cannot hold well: `explore` on a run folder and an MVTec-layout folder written to disk,
the live-kernel branch of its display (patched in the installed module), and imports checked in a fresh interpreter."""
import base64, io, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
import hfrae.explorer
from hfrae.explorer import explore, live_kernel
from hfrae.learner import fit
from hfrae.model import HFRAE
from hfrae.synthetic import SyntheticDefects, write_synthetic_mvtec

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def run_and_folder(tmp_path_factory):
    ("A run folder trained for one epoch at 64² and a synthetic category in MVTec layout "
     "(test: good, scratch, missing).")
    tmp = tmp_path_factory.mktemp('explorer')
    folder = write_synthetic_mvtec(tmp / 'data', kinds=['part'], n_train=4, n_test=6, image_size=64)[0]
    torch.manual_seed(0)
    fit(HFRAE(), SyntheticDefects('part', 'train', 4, 64), epochs=1, batch_size=4, run_dir=tmp / 'run', progress=False)
    return tmp / 'run', folder

@pytest.fixture(scope='module')
def built(run_and_folder):
    "`explore` on the run folder and the data folder: the network runs once for all tests."
    run, folder = run_and_folder
    return explore(run, folder, progress=False)

def pixels(image_widget): return np.array(Image.open(io.BytesIO(image_widget.value)))

def test_explore_from_paths_uses_the_runs_image_size(built, run_and_folder):
    _, folder = run_and_folder
    ex = built
    test_files = sorted(p.name for p in (folder / 'test').rglob('*.png'))
    # the run was trained at 64², the files are 64² too
    assert ex.cache.images.shape == (6, 64, 64, 3)
    assert sorted(Path(p).name for p in ex.cache.paths) == test_files
    assert ex.info.value.startswith(Path(ex.cache.paths[0]).name)
    assert pixels(ex.images['input']).shape == (64, 64, 3)
    assert explore(HFRAE(), folder, image_size=32, progress=False).cache.images.shape == (6, 32, 32, 3)

def test_static_figure_outside_a_kernel_and_widget_inside(built, monkeypatch):
    assert not live_kernel()                                          # plain Python: no kernel
    static = built._repr_mimebundle_()
    assert base64.b64decode(static['image/png'])[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'application/vnd.jupyter.widget-view+json' not in static
    monkeypatch.setattr(hfrae.explorer, 'live_kernel', lambda: True)
    live = built._repr_mimebundle_()
    assert live['application/vnd.jupyter.widget-view+json']['model_id'] == built.widget.model_id
    assert live['image/png'] == static['image/png']                   # the picture for front ends without widget state
    assert len(built.static_figure().axes) == 3 * 6                   # three telling images, six pictures each

def test_viz_does_not_import_ipywidgets():
    "The pictures (and so the command line) work without a widget toolkit."
    code = "import sys, hfrae.viz; assert 'ipywidgets' not in sys.modules, 'hfrae.viz imported ipywidgets'"
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
