"""The explorer driven through its widgets, as a student would: built from a run folder and an MVTec-layout folder written here."""
import base64, io, time
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
import hfrae.explorer
from hfrae.explorer import Explorer, LevelCache, explore, live_kernel, colorize
from hfrae.learner import fit
from hfrae.model import HFRAE
from hfrae.scoring import gaussian_blur, anomaly_score
from hfrae.synthetic import SyntheticDefects, write_synthetic_mvtec

@pytest.fixture(scope='module')
def run_and_folder(tmp_path_factory):
    "A run folder trained for one epoch at 64² and a synthetic category in MVTec layout (test: good, scratch, missing)."
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

@pytest.fixture
def ex(built):
    "A fresh explorer on the computed cache, with the model's settings."
    return Explorer(built.cache)

def pixels(image_widget): return np.array(Image.open(io.BytesIO(image_widget.value)))
def snapshot(ex): return {k: im.value for k, im in ex.images.items()}

def test_explore_from_paths_uses_the_runs_image_size(built, run_and_folder):
    _, folder = run_and_folder
    ex = built
    test_files = sorted(p.name for p in (folder / 'test').rglob('*.png'))
    assert ex.cache.images.shape == (6, 64, 64, 3)                   # the run was trained at 64², the files are 64² too
    assert sorted(Path(p).name for p in ex.cache.paths) == test_files
    assert ex.info.value.startswith(Path(ex.cache.paths[0]).name)
    assert pixels(ex.images['input']).shape == (64, 64, 3)
    assert explore(HFRAE(), folder, image_size=32, progress=False).cache.images.shape == (6, 32, 32, 3)

def test_every_control_redraws_what_it_should(ex):
    changes = {}
    for name, widget, value in [('slider', ex.slider, 1), ('level box', ex.level_boxes[0], False), ('sigma', ex.sigma, 1.0),
                                ('normalize', ex.normalize, 'none'), ('shared scale', ex.shared_scale, False), ('threshold', ex.threshold, None)]:
        before, info = snapshot(ex), ex.info.value
        if value is None: value = float(ex.fused(ex.index).quantile(0.9) / ex.scores().max())   # flags the top 10 %
        widget.value = value
        changes[name] = sorted(k for k, v in snapshot(ex).items() if v != before[k])
        assert ex.info.value != info or name == 'shared scale', name
    assert changes['slider'] == sorted(ex.images)
    assert changes['level box'] == changes['sigma'] == changes['threshold'] == ['fused']
    assert 'fused' in changes['normalize'] and 'input' not in changes['normalize']
    assert changes['shared scale'] and set(changes['shared scale']) <= {'level1', 'level2', 'level3'}

def test_fused_map_and_scores_follow_the_settings(ex):
    L = ex.cache.levels('paper')
    ex.level_boxes[0].value = False
    expected = anomaly_score(gaussian_blur(L[:, 1] + L[:, 2], 4.0))
    torch.testing.assert_close(ex.scores(), expected, rtol=1e-5, atol=1e-6 * float(expected.max()))
    i = ex.index
    torch.testing.assert_close(ex.fused(i), gaussian_blur(L[i:i + 1, 1] + L[i:i + 1, 2], 4.0)[0], rtol=1e-5, atol=1e-6 * float(expected.max()))
    rank = 1 + int((expected > expected[i]).sum())
    assert f'score {float(expected[i]):.4g}, rank {rank} of 6' in ex.info.value

def test_defect_dropdown_restricts_the_slider(ex):
    types = ex.cache.defect_types
    ex.defect.value = 'missing'
    assert ex.subset == [i for i, t in enumerate(types) if t == 'missing'] and ex.slider.max == len(ex.subset) - 1
    assert all(types[ex.subset[v]] == 'missing' for v in range(ex.slider.max + 1))
    assert '(missing)' in ex.info.value
    ex.defect.value = 'all'
    assert ex.slider.max == 5 and ex.index == 0

def test_threshold_outline_and_iou_on_a_constructed_case():
    "Two images; image 1's only level is 2 on rows 0-7 of a 16×16 map; the ground truth is rows 4-11: IoU 4·16 / (12·16)."
    raw = torch.zeros(2, 1, 16, 16); raw[0, 0, 5, 5] = 1; raw[1, 0, :8] = 2
    gt = torch.zeros(2, 16, 16, dtype=torch.bool); gt[1, 4:12] = True
    ex = Explorer(LevelCache(np.zeros((2, 16, 16, 3), np.uint8), gt, raw, torch.ones(1), [0, 1], ['good', 'band'], ['', ''], sigma=0., normalize='none'))
    ex.slider.value = 1; ex.threshold.value = 0.25                   # cuts at 0.5: the band's 128 pixels
    assert ex.info.value == f'#1 (band): score 2, rank 1 of 2; threshold 0.5: 128 px flagged, IoU {64 / 192:.3f}'
    white = pixels(ex.images['fused']).min(-1) == 255                # the outline: the band's inner edge, row 7
    assert white.sum() == 16 and white[7].all()
    ex.slider.value = 0                                               # the good image: its one pixel of 1 is above 0.5
    assert ex.info.value.endswith('1 px flagged, IoU 0.000')
    ex.threshold.value = 0.5                                          # cuts at 1: nothing flagged, nothing to find
    assert ex.info.value.endswith('0 px flagged, IoU n/a (nothing flagged, nothing to find)')

def test_colour_scales():
    raw = torch.zeros(1, 2, 8, 8); raw[0, 0] = 1; raw[0, 1] = 4
    ex = Explorer(LevelCache(np.zeros((1, 8, 8, 3), np.uint8), torch.zeros(1, 8, 8, dtype=torch.bool), raw, torch.tensor([1., 4.]),
                             [0], ['good'], [''], sigma=0., normalize='none'))
    assert (pixels(ex.images['level1']) == colorize(np.ones((8, 8)), 4.)).all()           # shared: 1 against 4
    ex.shared_scale.value = False
    assert (pixels(ex.images['level1']) == colorize(np.ones((8, 8)), 1.)).all()           # per level: 1 against 1
    ex.shared_scale.value = True; ex.normalize.value = 'paper'                           # 1/1 and 4/4: both at the top
    assert (pixels(ex.images['level1']) == pixels(ex.images['level2'])).all()

def test_static_figure_outside_a_kernel_and_widget_inside(ex, monkeypatch):
    assert not live_kernel()                                          # plain Python: no kernel
    static = ex._repr_mimebundle_()
    assert base64.b64decode(static['image/png'])[:8] == b'\x89PNG\r\n\x1a\n'
    monkeypatch.setattr(hfrae.explorer, 'live_kernel', lambda: True)
    live = ex._repr_mimebundle_()
    assert live['application/vnd.jupyter.widget-view+json']['model_id'] == ex.widget.model_id
    assert len(ex.static_figure().axes) == 3 * 6                      # three telling images, six pictures each

def test_bad_input():
    with pytest.raises(ValueError, match='model must be an HFRAE or a run folder'): explore(42, 'x')
    with pytest.raises(FileNotFoundError, match='no checkpoint'): explore('/nonexistent/run', 'x')

def test_latency_of_each_interaction_is_below_200_ms(ex):
    "Median over 10 interactions of each kind, σ apart (it re-smooths the whole test set), on the 6 images of 64²."
    def median_ms(widget, values):
        times = []
        for v in values:
            t = time.perf_counter(); widget.value = v; times.append(time.perf_counter() - t)
        return 1000 * float(np.median(times))
    for widget, values in [(ex.slider, [1, 2, 3, 4, 5] * 2), (ex.level_boxes[2], [False, True] * 5), (ex.normalize, ['none', 'paper'] * 5),
                           (ex.threshold, np.linspace(0.1, 0.9, 10)), (ex.sigma, [1., 2., 3., 5., 4.])]:
        assert median_ms(widget, values) < 200, widget.description
