"""hfrae.grading: the solution notebooks pass every check; typical wrong implementations (written here, independently
of the checks' own mistake list) are each caught with their specific message; the student copies stay in step with
the solutions."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from execnb.nbio import read_nb
from execnb.shell import CaptureShell
from scipy import ndimage
from scipy.ndimage import gaussian_filter

from hfrae.assignments import ASSIGNMENTS_DIR, SOLUTION_BEGIN, copy_assignments, student_notebook
from hfrae.grading import (check_ablation, check_anomaly_map, check_anomaly_score, check_aupro,
                           check_level_subset_map, check_loss, check_residual_maps)
from hfrae.checks_metrics import reference_ablation
from hfrae.scoring import anomaly_map

SOLUTIONS = ASSIGNMENTS_DIR / 'solutions'


def _outputs(nb):
    "All text a notebook's code cells printed or raised."
    texts = []
    for c in nb.cells:
        for o in c.get('outputs', []):
            if o.get('output_type') == 'stream': texts.append(''.join(o['text']))
            if o.get('output_type') == 'error': texts.append(f"ERROR {o['ename']}: {o['evalue']}")
    return '\n'.join(texts)


@pytest.mark.parametrize('name', ['01_residual_maps', '02_loss', '03_anomaly_map', '04_aupro'])
def test_solutions_pass_every_check(name):
    nb = read_nb(SOLUTIONS / f'{name}.ipynb')
    CaptureShell().run_all(nb)
    out = _outputs(nb)
    n_checks = sum(l.startswith('check_') for c in nb.cells if c.cell_type == 'code' for l in c.source.splitlines())
    assert 'ERROR' not in out and '❌' not in out, out
    assert out.count('✅') == n_checks >= 1, out


def _cells(nb): return [(c['cell_type'], ''.join(c['source'])) for c in nb['cells']]

@pytest.mark.parametrize('sol', sorted(SOLUTIONS.glob('*.ipynb')), ids=lambda p: p.name)
def test_student_copies_are_the_stripped_solutions(sol):
    student = ASSIGNMENTS_DIR / sol.name
    s_nb, st_nb = json.loads(sol.read_text()), json.loads(student.read_text())
    assert _cells(student_notebook(s_nb)) == _cells(st_nb), (
        f"{student} is out of date: run hfrae.assignments.write_student_notebooks()")
    text = student.read_text()
    assert SOLUTION_BEGIN not in text and 'NotImplementedError' in text and 'check_' in text
    for nb in (s_nb, st_nb):   # never exported by nbdev_export
        assert not any(l.lstrip().startswith(('#| default_exp', '#| export')) for c in nb['cells'] for l in c['source'])


def test_assignments_are_skipped_by_nbdev_test():
    assert (ASSIGNMENTS_DIR / '.notest').exists() and (SOLUTIONS / '.notest').exists()
    assert len(list(ASSIGNMENTS_DIR.glob('*.ipynb'))) >= 5


def test_unsolved_exercise_says_not_written_yet():
    nb = read_nb(ASSIGNMENTS_DIR / '01_residual_maps.ipynb')
    CaptureShell().run_all(nb)
    assert 'not written yet' in _outputs(nb)


def test_copy_assignments(tmp_path):
    paths = copy_assignments(tmp_path / 'me')
    assert [p.name for p in paths] == sorted(p.name for p in ASSIGNMENTS_DIR.glob('*.ipynb'))
    assert all(p.read_text() == (ASSIGNMENTS_DIR / p.name).read_text() for p in paths)
    assert not (tmp_path / 'me' / 'solutions').exists()
    paths[0].write_text('my work')
    with pytest.raises(FileExistsError, match='already exist'): copy_assignments(tmp_path / 'me')
    assert paths[0].read_text() == 'my work'
    copy_assignments(tmp_path / 'me', overwrite=True)
    assert paths[0].read_text() != 'my work'
    with pytest.raises(FileNotFoundError, match='no exercise notebooks'):
        copy_assignments(tmp_path / 'x', src=tmp_path / 'nowhere')


def _failed(result, phrase):
    assert result.passed is False, result.message
    assert phrase in result.message, result.message


# ---- exercise 1: residual maps ----
def unit(x): return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp(min=1e-12)

@pytest.mark.parametrize('fn, phrase', [
    (lambda E, D: [(unit(e) - unit(d)).pow(2) for e, d in zip(E, D)], 'missing the ½ of eq. 5'),
    (lambda E, D: [((e / e.flatten(2).norm(dim=2)[..., None, None])
                    - (d / d.flatten(2).norm(dim=2)[..., None, None])).pow(2) / 2 for e, d in zip(E, D)],
     'normalised over the spatial axes'),
    (lambda E, D: [(e - d) ** 2 / 2 for e, d in zip(E, D)], 'compared the raw features'),
    (lambda E, D: [(e / torch.sqrt((e * e).sum(1, keepdim=True))
                    - d / torch.sqrt((d * d).sum(1, keepdim=True))) ** 2 * .5 for e, d in zip(E, D)],
     'NaN where a feature vector is all zeros'),
    (lambda E, D: [((unit(e) - unit(d)) ** 2 / 2).sum(dim=1, keepdim=True) for e, d in zip(E, D)],
     'summed φ over the channels'),
    (lambda E, D: [torch.ones(1) - F.cosine_similarity(e.reshape(len(e), -1), d.reshape(len(d), -1))
                   for e, d in zip(E, D)],
     'one flattened vector'),
])
def test_residual_map_mistakes(fn, phrase): _failed(check_residual_maps(fn, verbose=False), phrase)

def test_residual_maps_unseen_mistakes():
    def inplace(E, D):
        for e in E: e /= e.norm(dim=1, keepdim=True)
        return [0.5 * (e - unit(d)) ** 2 for e, d in zip(E, D)]
    _failed(check_residual_maps(inplace, verbose=False), 'changed its input tensors')
    def crash(E, D): return [0.5 * (unit(e) - unit(d)) ** 2 for e, d in zip(E, D[1:])] + [E[5]]
    _failed(check_residual_maps(crash, verbose=False), 'raised IndexError')
    _failed(check_residual_maps(lambda E, D: [0.5 * (unit(e) - unit(d)) ** 2 for e, d in zip(E, D)][0],
                                verbose=False), 'return a list')
    _failed(check_residual_maps(lambda E, D: [0.5 * (unit(e) - unit(d)).detach() ** 2 for e, d in zip(E, D)],
                                verbose=False), 'no gradient')
    # an unknown slip still gets the hand example's numbers
    _failed(check_residual_maps(lambda E, D: [0.5 * (unit(e) - unit(d)) ** 2 + 0.01 for e, d in zip(E, D)],
                                verbose=False), 'expected [0.02, 0.02]')


# ---- exercise 2: loss ----
def phis(E, D): return [0.5 * (unit(e) - unit(d)) ** 2 for e, d in zip(E, D)]

@pytest.mark.parametrize('fn, phrase', [
    (lambda E, D: sum(p.sum(dim=1).mean() for p in phis(E, D)), 'missing the 1/K of eq. 8'),
    (lambda E, D: sum(p.sum(dim=(1, 2, 3)).mean() for p in phis(E, D)) / len(E), 'divides by w_k × h_k'),
    (lambda E, D: sum(p.mean() for p in phis(E, D)) / len(E), 'you averaged over them'),
    (lambda E, D: sum(p.sum(1).mean(dim=(1, 2)) for p in phis(E, D)).sum() / len(E), "added the images' losses"),
    (lambda E, D: float(sum(p.sum(1).mean() for p in phis(E, D)) / len(E)), "Python number"),
])
def test_loss_mistakes(fn, phrase): _failed(check_loss(fn, verbose=False), phrase)


# ---- exercise 3: anomaly map and score ----
def amap(phis, size, sigma=4.0, normalize='paper', mode='bilinear', blur=gaussian_filter, levels=sum, norm_paper=True):
    size = (size, size) if isinstance(size, int) else size
    resized = []
    for p in phis:
        m = p.sum(1, keepdim=True)
        if normalize == 'paper' and norm_paper: m = m / (p.shape[2] * p.shape[3])
        resized.append(F.interpolate(m, size=size, mode=mode)[:, 0])
    m = levels(resized)
    if blur is None or sigma == 0: return m
    return torch.stack([torch.from_numpy(blur(x.numpy(), sigma)) for x in m])

@pytest.mark.parametrize('kw, phrase', [
    (dict(blur=None), 'the Gaussian of eq. 10 is missing'),
    (dict(blur=lambda x, s: gaussian_filter(x, s, mode='constant')), 'border as zeros'),
    (dict(blur=lambda x, s: gaussian_filter(x, 4.0)), 'ignores the `sigma` argument'),
    (dict(mode='nearest'), 'nearest-neighbour'),
    (dict(norm_paper=False), "the 'none' reading"),
    (dict(levels=lambda ms: torch.stack(ms).amax(0)), 'you took their maximum'),
])
def test_anomaly_map_mistakes(kw, phrase):
    _failed(check_anomaly_map(lambda phis, size, sigma=4.0, normalize='paper': amap(phis, size, sigma, normalize, **kw),
                              verbose=False), phrase)

def test_anomaly_map_and_score_pass_and_fail():
    assert check_anomaly_map(amap, verbose=False).passed
    _failed(check_anomaly_map(lambda *a, **k: amap(*a, **k)[:, None], verbose=False), '[B, 1, H, W]')
    _failed(check_anomaly_map(lambda *a, **k: amap(*a, **k).numpy(), verbose=False), 'numpy array')
    assert check_anomaly_score(lambda m: m.reshape(len(m), -1).max(dim=1)[0], verbose=False).passed
    _failed(check_anomaly_score(lambda m: m.reshape(len(m), -1).mean(dim=1), verbose=False), 'you took the mean')
    _failed(check_anomaly_score(lambda m: m.amax(), verbose=False), 'over the whole batch')
    _failed(check_anomaly_score(lambda m: m.amax(dim=2), verbose=False), 'one axis only')


# ---- exercise 4: AUPRO ----
def my_aupro(masks, maps, fpr_limit=0.3, conn=np.ones((3, 3)), per_image=False, fpr_all=False, end='interp',
             region_mean=True):
    masks, maps = np.asarray(masks, bool), np.asarray(maps, float)
    if per_image:
        return float(np.mean([my_aupro(m[None], s[None], fpr_limit, conn, False, fpr_all, end, region_mean)
                              for m, s in zip(masks, maps) if m.any()]))
    regions, n = np.zeros(masks.shape, int), 0
    for i, m in enumerate(masks):
        lab, k = ndimage.label(m, conn)
        regions[i] = np.where(lab > 0, lab + n, 0); n += k
    thresholds = np.unique(maps)[::-1]
    good = regions == 0
    sizes = np.bincount(regions.ravel())
    fpr, pro = [0.], [0.]
    for t in thresholds:
        hit = maps >= t
        fpr.append((hit & good).sum() / (good.sum() if not fpr_all else good.size))
        pro.append(np.bincount(regions[hit], minlength=n + 1)[1:].dot(1 / sizes[1:]) / n if region_mean
                   else (hit & ~good).sum() / (~good).sum())
    fpr, pro = np.array(fpr), np.array(pro)
    keep = fpr <= fpr_limit
    if end == 'interp':
        x, y = np.append(fpr[keep], fpr_limit), np.append(pro[keep], np.interp(fpr_limit, fpr, pro))
        return float(np.trapezoid(y, x) / fpr_limit)
    with np.errstate(invalid='ignore'):
        return float(np.trapezoid(pro[keep], fpr[keep]) / (fpr[keep][-1] if end == 'last' else fpr_limit))

def test_aupro_correct_independent_version_passes():
    assert check_aupro(my_aupro, verbose=False).passed

@pytest.mark.parametrize('kw, phrase', [
    (dict(end='last'), 'divided by the last FPR'),
    (dict(end='none'), 'interpolated'),
    (dict(per_image=True), 'averaged per-image AUPROs'),
    (dict(conn=None), '8-connectivity'),
    (dict(fpr_all=True), 'only anomaly-free pixels'),
    (dict(region_mean=False), 'true-positive rate'),
])
def test_aupro_mistakes(kw, phrase):
    _failed(check_aupro(lambda masks, maps, fpr_limit=0.3: my_aupro(masks, maps, fpr_limit, **kw), verbose=False),
            phrase)


# ---- exercise 5: ablation plumbing ----
@pytest.mark.parametrize('fn, phrase', [
    (lambda phis, levels, size: anomaly_map([phis[k] for k in levels], size), 'Python counts from 0'),
    (lambda phis, levels, size: anomaly_map(list(phis), size), 'does not change with `levels`'),
    (lambda phis, levels, size: anomaly_map([phis[k - 1] for k in levels], size, normalize='none'),
     "normalize='paper'"),
    (lambda phis, levels, size: anomaly_map([phis[k - 1] for k in levels], size, sigma=0),
     'Gaussian of eq. 10 is missing'),
])
def test_level_subset_mistakes(fn, phrase): _failed(check_level_subset_map(fn, verbose=False), phrase)

@pytest.fixture
def fake_test_set():
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(8, 32, 32, dtype=torch.bool); masks[4:, 4:12, 20:28] = True
    phis = [torch.rand(8, c, 32 // s, 32 // s, generator=g) for c, s in [(3, 4), (5, 8), (7, 16)]]
    phis[0][4:, :, 1:3, 5:7] += 2
    return phis, torch.tensor([0] * 4 + [1] * 4), masks

def test_ablation_checks(fake_test_set):
    good = lambda phis, labels, masks, normalize: reference_ablation(phis, labels, masks, normalize=normalize)
    assert check_ablation(good, verbose=False).passed
    braces = lambda *a: {str(set(k)): v for k, v in good(*a).items()}     # '{1, 2}' keys
    assert check_ablation(braces, verbose=False).passed
    _failed(check_ablation(lambda *a: [good(*a)], verbose=False), 'should be a dict')
    _failed(check_ablation(lambda *a: {k: v for k, v in good(*a).items() if k != (3,)}, verbose=False),
            'no entry for the level subset(s) (3,)')
    _failed(check_ablation(lambda *a: {**good(*a), (4,): good(*a)[(1,)]}, verbose=False), 'is not a set of levels')
    _failed(check_ablation(lambda *a: {k: {m: x for m, x in v.items() if m != 'aupro'} for k, v in good(*a).items()},
                           verbose=False), "has no 'aupro'")
    _failed(check_ablation(lambda *a: {k: good(*a)[(1, 2, 3)] for k in good(*a)}, verbose=False),
            'exactly the same numbers')
    def zero_based(*a):   # maps built from the wrong levels
        t = good(*a); return {k: dict(t[tuple(sorted({min(l + 1, 3) for l in k}))]) for k in t}
    _failed(check_ablation(zero_based, verbose=False), 'but the reference gives')


# ---- a result that depends on the rest of the batch is named as such ----
def test_batch_dependence_is_diagnosed():
    def max_norm_of_batch(E, D):   # right for one image; divides by the largest norm over the batch
        n = lambda x: x / x.norm(dim=1, keepdim=True).max(dim=0, keepdim=True).values.clamp(min=1e-12)
        return [(n(e) - n(d)) ** 2 / 2 for e, d in zip(E, D)]
    _failed(check_residual_maps(max_norm_of_batch, verbose=False), 'changes when other images are in the batch')
    scaled_by_batch = lambda phis, size, sigma=4.0, normalize='paper': amap(phis, size, sigma, normalize) / len(phis[0])
    assert check_anomaly_map(scaled_by_batch, verbose=False).passed is False
    peak_of_batch = (lambda phis, size, sigma=4.0, normalize='paper':
                     (lambda m: m / m.max())(amap(phis, size, sigma, normalize)))
    _failed(check_anomaly_map(peak_of_batch, verbose=False), 'changes when other images are in the batch')


# ---- exercise 5 in eq. 9's other mode ----
def subset_amap(phis, levels, size, normalize='paper'):
    return amap([phis[k - 1] for k in levels], size, normalize=normalize)

def test_level_subset_map_in_both_modes():
    assert check_level_subset_map(subset_amap, verbose=False).passed
    _failed(check_level_subset_map(lambda phis, levels, size, normalize='paper': subset_amap(phis, levels, size),
                                   verbose=False),
            'ignores the `normalize` argument')

def _table(phis, labels, masks, normalize):
    "The ablation table, written independently: maps from `subset_amap`, sklearn's AUROC, the AUPRO above."
    from sklearn.metrics import roc_auc_score
    table = {}
    for levels in [(1,), (2,), (3,), (1, 2), (2, 3), (1, 3), (1, 2, 3)]:
        maps = subset_amap(phis, levels, masks.shape[-1], normalize)
        table[levels] = dict(image_auroc=roc_auc_score(labels.numpy(), maps.flatten(1).max(1).values.numpy()),
                             pixel_auroc=roc_auc_score(masks.numpy().ravel(), maps.numpy().ravel()),
                             aupro=my_aupro(masks.numpy(), maps.numpy()))
    return table

def test_ablation_with_normalize_none_is_held_to_the_right_answer():
    table = lambda phis, labels, masks, normalize: _table(phis, labels, masks, normalize)
    assert check_ablation(table, verbose=False).passed
    other = {'paper': 'none', 'none': 'paper'}
    swapped = lambda phis, labels, masks, normalize: _table(phis, labels, masks, other[normalize])
    _failed(check_ablation(swapped, verbose=False), "normalize='paper'")

def test_exercise_5_solution_map_passes_in_both_modes():
    nb = json.loads((SOLUTIONS / '05_ablation.ipynb').read_text())
    src = next(''.join(c['source']) for c in nb['cells'] if ''.join(c['source']).startswith('def my_subset_map('))
    ns = {'anomaly_map': anomaly_map}
    exec(src, ns)
    assert "normalize='paper'" in src and check_level_subset_map(ns['my_subset_map'], verbose=False).passed
    phis = [torch.rand(2, 3, 8, 8), torch.rand(2, 5, 4, 4), torch.rand(2, 7, 2, 2)]
    torch.testing.assert_close(ns['my_subset_map'](phis, (1, 2), 32, 'none'), subset_amap(phis, (1, 2), 32, 'none'))


# ---- eq. 9's 1/c_k reading is named as such ----
def test_anomaly_map_names_the_mean_reading():
    def mean_reading(phis, size, sigma=4.0, normalize='paper'):
        ms = [(p.mean(1) if normalize == 'paper' else p.sum(1))[:, None] for p in phis]
        size = (size, size) if isinstance(size, int) else tuple(size)
        m = sum(F.interpolate(x, size=size, mode='bilinear', align_corners=False)[:, 0] for x in ms)
        return torch.from_numpy(gaussian_filter(m.numpy(), (0, sigma, sigma))).float() if sigma else m
    _failed(check_anomaly_map(mean_reading, verbose=False), 'the 1/c_k reading of eq. 9')
