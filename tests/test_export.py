"""ONNX export of a trained run: onnxruntime against PyTorch, the graph's names and shapes, metadata, errors."""
import sys
from pathlib import Path
import numpy as np
import pytest
import torch
onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime'); pytest.importorskip('onnxscript')
import hfrae.export
from hfrae import __version__
from hfrae.export import OnnxDetector, export_onnx
from hfrae.learner import fit, load_checkpoint, load_model, save_checkpoint
from hfrae.model import HFRAE, Threshold
from hfrae.synthetic import synthetic_category

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "A run trained one epoch on a synthetic category at 64², its test images, its checkpoint copied with a threshold."
    train_ds, test_ds = synthetic_category('part', 8, 6, 64)
    run = tmp_path_factory.mktemp('run')
    torch.manual_seed(0)
    fit(HFRAE(), train_ds, epochs=1, holdout=0, run_dir=run, progress=False)      # no threshold of its own
    ckpt = load_checkpoint(run)
    with_threshold = run / 'with_threshold.pt'
    state = {k: v for k, v in ckpt.items() if k not in ('format', 'config', 'decoder', 'threshold', 'image_size')}
    model = load_model(run); model.threshold = Threshold(0.5)
    save_checkpoint(with_threshold, model, **state)
    return run, with_threshold, torch.stack([test_ds[i]['image'] for i in range(len(test_ds))])

@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
    _, with_threshold, _ = trained
    return export_onnx(with_threshold, tmp_path_factory.mktemp('onnx') / 'model.onnx')

def dims(v): return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

def test_onnxruntime_reproduces_pytorch(trained, exported):
    run, _, x = trained
    maps, scores = load_model(run).predict(x)
    tol = 1e-4 * float(scores.max() - scores.min())
    assert tol > 0
    det = OnnxDetector(exported)
    for batch in (x[:3], x):                     # traced with 2 images: other batch sizes run too
        got_maps, got_scores = det(batch)
        assert got_maps.shape == (len(batch), 64, 64) and got_scores.shape == (len(batch),)
        torch.testing.assert_close(got_scores, scores[:len(batch)], atol=tol, rtol=0)
        torch.testing.assert_close(got_maps, maps[:len(batch)], atol=tol, rtol=0)

def test_names_shapes_and_metadata(trained, exported):
    proto = onnx.load(exported)
    onnx.checker.check_model(proto)
    assert [(v.name, dims(v)) for v in proto.graph.input] == [('images', ['batch', 3, 64, 64])]
    assert [(v.name, dims(v)) for v in proto.graph.output] == [('anomaly_map', ['batch', 64, 64]), ('score', ['batch'])]
    config = load_checkpoint(trained[0])['config']
    assert {p.key: p.value for p in proto.metadata_props} == dict(
        backbone='efficientnet_lite0', image_size='[64, 64]', sigma=repr(config['sigma']),
        normalize=config['normalize'], hfrae_version=__version__, threshold='0.5')
    det = OnnxDetector(exported, threads=1)
    assert (det.image_size, det.threshold, det.metadata['backbone']) == ((64, 64), 0.5, 'efficientnet_lite0')

def test_run_without_threshold_records_none(trained, tmp_path, monkeypatch):
    run, _, _ = trained
    assert load_checkpoint(run)['threshold'] is None and load_model(run).threshold is None
    monkeypatch.setattr(hfrae.export, 'onnx_graph', lambda model, size, opset=None: onnx.ModelProto())   # metadata only
    meta = {p.key: p.value for p in onnx.load(export_onnx(run, tmp_path / 'm.onnx')).metadata_props}
    assert 'threshold' not in meta and meta['image_size'] == '[64, 64]'

def test_errors(trained, tmp_path, monkeypatch):
    run, _, x = trained
    with pytest.raises(FileNotFoundError, match='no checkpoint'): export_onnx(tmp_path / 'missing', tmp_path / 'm.onnx')
    with pytest.raises(FileNotFoundError, match='no ONNX file'): OnnxDetector(tmp_path / 'missing.onnx')
    with pytest.raises(ValueError, match=r'trained at \(64, 64\), not \(128, 128\)'):
        export_onnx(run, tmp_path / 'm.onnx', image_size=128)
    monkeypatch.setitem(sys.modules, 'onnxscript', None)      # as if the extra were not installed
    with pytest.raises(ImportError, match=r"'onnxscript'.*pip install hfrae\[export\]"):
        export_onnx(run, tmp_path / 'm.onnx')
    assert not list(tmp_path.iterdir()), 'a failed export left files behind'
