"""hfrae.metrics against an independent port of the MVTec AD evaluation procedure, and a sweep of bad inputs."""
from bisect import bisect

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from hfrae.metrics import aupro, best_f1_threshold, image_auroc, pixel_auroc, pro_curve


def mvtec_pro_curve(anomaly_maps, ground_truth_maps):
    "The PRO curve as the MVTec AD evaluation code computes it (pro_curve_util.compute_pro), step by step."
    structure = np.ones((3, 3), dtype=int)
    num_ok_pixels, num_gt_regions = 0, 0
    fp_changes = np.zeros(anomaly_maps.shape, dtype=np.uint32)
    pro_changes = np.zeros(anomaly_maps.shape, dtype=np.float64)
    for i, gt_map in enumerate(ground_truth_maps):
        labeled, n_components = ndimage.label(gt_map, structure)
        num_gt_regions += n_components
        ok_mask = labeled == 0
        num_ok_pixels += np.sum(ok_mask)
        fp_changes[i][ok_mask] = 1
        for k in range(n_components):
            region = labeled == k + 1
            pro_changes[i][region] = 1. / np.sum(region)
    scores = np.array(anomaly_maps).ravel()
    order = np.argsort(scores).astype(np.uint32)[::-1]
    scores, fp_changes, pro_changes = scores[order], fp_changes.ravel()[order], pro_changes.ravel()[order]
    fprs = (np.cumsum(fp_changes).astype(np.float32) / num_ok_pixels).astype(np.float32)
    pros = np.cumsum(pro_changes) / num_gt_regions
    keep = np.append(np.diff(scores) != 0, np.True_)   # the last point of each group of equal scores
    fprs, pros = np.clip(fprs[keep], None, 1.), np.clip(pros[keep], None, 1.)
    return np.concatenate(([0.], fprs, [1.])), np.concatenate(([0.], pros, [1.]))


def mvtec_trapezoid(x, y, x_max):
    "generic_util.trapezoid of the MVTec AD evaluation code: trapezoid rule up to x_max, the end point interpolated."
    x, y = np.array(x), np.array(y)
    correction = 0.
    if x_max not in x:
        ins = bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x, y = x[mask], y[mask]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def mvtec_aupro(masks, maps, limit=0.3):
    return mvtec_trapezoid(*mvtec_pro_curve(maps, masks), limit) / limit


def sort_based_aupro(masks, maps, fpr_limit=0.3, n_thresholds=20_000):
    "AUPRO at 20 000 thresholds, quantiles of the good pixels' scores; each component counted by searchsorted."
    good, regions = [], []
    for mask, amap in zip(np.asarray(masks, bool), np.asarray(maps, np.float32)):
        labels, n = ndimage.label(mask, np.ones((3, 3), int))       # 8-connected components, once per map
        good.append(amap[labels == 0])
        order = np.argsort(labels, axis=None, kind='stable')         # the pixels grouped by component
        ends = np.cumsum(np.bincount(labels.ravel(), minlength=n + 1))
        flat = amap.ravel()[order]
        regions += [np.sort(flat[a:b]) for a, b in zip(ends[:-1], ends[1:])]
    good = np.sort(np.concatenate(good))
    thresholds = good[np.round(np.linspace(len(good) - 1, 0, n_thresholds)).astype(np.int64)]   # descending
    fprs = np.append(0., (len(good) - np.searchsorted(good, thresholds)) / len(good))
    pros = np.append(0., np.mean([(len(r) - np.searchsorted(r, thresholds)) / len(r) for r in regions], axis=0))
    i = np.searchsorted(fprs, fpr_limit, 'right')                    # fprs[:i] <= fpr_limit < fprs[i]
    end = pros[i - 1] + (pros[i] - pros[i - 1]) * (fpr_limit - fprs[i - 1]) / (fprs[i] - fprs[i - 1])
    x, y = np.append(fprs[:i], fpr_limit), np.append(pros[:i], end)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / fpr_limit)


def realistic(n=24, size=96, seed=0, strength=0.05):
    "Smooth float32 maps with round and line defects in half of the images, found with varying strength."
    rng = np.random.default_rng(seed)
    yy, xx = np.ogrid[:size, :size]
    masks = np.zeros((n, size, size), bool)
    for i in range(0, n, 2):
        for _ in range(rng.integers(1, 4)):
            (y, x), r = rng.integers(5, size - 5, 2), rng.integers(1, size // 8)
            masks[i] |= (yy - y) ** 2 + (xx - x) ** 2 < r * r
        masks[i, rng.integers(0, size), rng.integers(0, size // 2):] = True
    maps = ndimage.gaussian_filter(rng.random((n, size, size)), (0, 3, 3))
    maps += strength * rng.random(n)[:, None, None] * ndimage.gaussian_filter(masks.astype(float), (0, 2, 2))
    return masks, maps.astype(np.float32)


@pytest.mark.parametrize('seed,strength,limit',
                         [(0, 0.05, 0.3), (1, 0.02, 0.3), (2, 0.1, 0.3), (3, 0.03, 0.05), (4, 0.05, 1.0)])
def test_aupro_matches_mvtec_procedure(seed, strength, limit):
    masks, maps = realistic(seed=seed, strength=strength)
    assert abs(aupro(masks, maps, limit) - mvtec_aupro(masks, maps, limit)) < 1e-5


@pytest.mark.parametrize('seed,strength', [(0, 0.05), (1, 0.02), (2, 0.1)])
def test_aupro_close_to_sort_based_quantile_thresholds(seed, strength):
    masks, maps = realistic(n=40, size=128, seed=seed, strength=strength)
    assert abs(aupro(masks, maps) - sort_based_aupro(masks, maps)) < 2e-5
    assert abs(mvtec_aupro(masks, maps) - sort_based_aupro(masks, maps)) < 2e-5


def test_aupro_with_ties_matches_mvtec_procedure():
    masks, maps = realistic(seed=5)
    maps = np.round(maps * 50) / 50      # a few dozen distinct scores: many ties between good and defect pixels
    assert abs(aupro(masks, maps) - mvtec_aupro(masks, maps)) < 1e-5


def test_pro_curve_prefix_is_the_full_curve():
    masks, maps = realistic(seed=6)
    fpr, pro = pro_curve(masks, maps)
    f3, p3 = pro_curve(masks, maps, fpr_limit=0.3)
    assert f3[-1] > 0.3 and len(f3) < len(fpr)
    np.testing.assert_array_equal(f3, fpr[:len(f3)])
    np.testing.assert_allclose(p3, pro[:len(p3)], atol=1e-12)
    assert fpr[-1] == 1 and abs(pro[-1] - 1) < 1e-12


def test_torch_inputs_any_float_dtype():
    masks, maps = realistic(n=6, size=48, seed=7)
    want = aupro(masks, maps.astype(np.float64))
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = torch.from_numpy(maps).to(dtype)
        expected = aupro(masks, t.float().numpy())   # the same values after the dtype's rounding
        assert aupro(torch.from_numpy(masks).float(), t) == pytest.approx(expected, abs=1e-12)
    assert aupro(torch.from_numpy(masks).long(), torch.from_numpy(maps)) == pytest.approx(want, abs=1e-6)
    sk_auroc = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(torch.from_numpy(masks), torch.from_numpy(maps)) == pytest.approx(sk_auroc, abs=1e-12)


def test_auroc_large_against_sklearn():
    rng = np.random.default_rng(8)
    labels = rng.random(5000) < 0.2
    scores = rng.normal(size=5000).astype(np.float32) + labels
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


good_mask = np.zeros((2, 8, 8)); good_mask[0, 2:4, 2:4] = 1
good_map = np.random.default_rng(9).random((2, 8, 8))

@pytest.mark.parametrize('call,message', [
    (lambda: aupro(good_mask, good_map[:1]), r'same shape, got \(2, 8, 8\) and \(1, 8, 8\)'),
    (lambda: aupro(good_mask[:, None], good_map[:, None]), r'2 or 3 dimension\(s\), got shape \(2, 1, 8, 8\)'),
    (lambda: aupro(good_mask, np.where(good_mask > 0, np.nan, good_map)), 'maps must be finite, found 4 NaN/inf'),
    (lambda: aupro(good_mask, good_map * np.inf), 'maps must be finite'),
    (lambda: aupro(good_mask * 0, good_map), 'AUPRO is undefined: the masks contain no defect pixel'),
    (lambda: aupro(good_mask * 255, good_map), r'masks must be binary .* such as \[255\.0\]'),
    (lambda: aupro(good_mask, good_map, fpr_limit=1.5), r'fpr_limit must be in \(0, 1\]'),
    (lambda: aupro(good_mask, good_map.astype(str)), 'maps must be real numbers'),
    (lambda: pixel_auroc(good_mask * 0, good_map), 'AUROC needs both classes, but all 128 labels are 0'),
    (lambda: pixel_auroc(good_mask - 1, good_map), 'masks must be binary'),
    (lambda: image_auroc([1, 1, 1], [.1, .2, .3]), 'AUROC needs both classes, but all 3 labels are 1'),
    (lambda: image_auroc([0, 1, 1], [.1, .2]), r'same shape, got \(3,\) and \(2,\)'),
    (lambda: image_auroc([0, 1], [.1, float('nan')]), 'scores must be finite'),
    (lambda: image_auroc([0, 2], [.1, .2]), 'labels must be binary'),
    (lambda: best_f1_threshold([0, 0], [.1, .2]), 'without any anomalous label'),
])
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message): call()
