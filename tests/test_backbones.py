"""Backbones beyond the chapter's examples: checkpoints rebuild every kind of encoder, the Lite weights are the
released ones, and the image checks catch the usual mistakes whatever the dtype."""
import pytest, torch
from hfrae.encoder import (BACKBONES, LITE_SCALING, Encoder, validate_backbone, validate_images, imagenet_state_dict,
                           lite_weights_path, pick_levels)
from hfrae.learner import load_model, save_checkpoint
from hfrae.model import HFRAE

@pytest.mark.parametrize('backbone', ['timm:resnet18', 'efficientnet_lite1'])
def test_checkpoint_rebuilds_random_encoder(tmp_path, backbone):
    "weights=None is drawn from a fixed seed: a model trained on it predicts the same after `load_model`."
    model = HFRAE(backbone, weights=None, sigma=2).eval()
    torch.nn.init.normal_(model.decoder.levels[0][-1].weight)      # a decoder unlike a fresh one
    save_checkpoint(tmp_path / 'checkpoint.pt', model)
    loaded, x = load_model(tmp_path), torch.rand(2, 3, 64, 64)
    assert loaded.config == model.config
    for a, b in zip(model.predict(x), loaded.predict(x)): assert torch.equal(a, b)

def test_checkpoint_rebuilds_encoder_from_file(tmp_path):
    import timm
    sd = timm.create_model('resnet18', pretrained=False).state_dict()
    torch.save(sd, tmp_path / 'r18.pth')
    model = HFRAE('timm:resnet18', weights=tmp_path / 'r18.pth').eval()
    assert model.config['weights'] == str(tmp_path / 'r18.pth')
    save_checkpoint(tmp_path / 'checkpoint.pt', model)
    loaded = load_model(tmp_path / 'checkpoint.pt')
    assert torch.equal(loaded.encoder.trunk.conv1.weight, sd['conv1.weight'])

@pytest.mark.parametrize('backbone', list(LITE_SCALING))
def test_lite_trunk_holds_released_weights(backbone):
    enc, released = Encoder(backbone), imagenet_state_dict(backbone)
    assert lite_weights_path(backbone).endswith('.pth')
    trunk = enc.trunk.state_dict()
    assert len(trunk) > 100 and all(torch.equal(v, released[k]) for k, v in trunk.items())
    last = len(enc.trunk._blocks) - 1
    assert f'_blocks.{last + 1}._project_conv.weight' in released     # the classifier's blocks are left out

def test_random_encoder_leaves_caller_rng_alone():
    torch.manual_seed(3); expected = torch.rand(4)
    torch.manual_seed(3); Encoder('resnet18', weights=None)
    assert torch.equal(torch.rand(4), expected)

def test_validate_backbone_as_argparse_type():
    import argparse
    p = argparse.ArgumentParser(); p.add_argument('--backbone', type=validate_backbone, default=BACKBONES[0])
    assert p.parse_args(['--backbone', 'timm:convnext_nano']).backbone == 'timm:convnext_nano'
    assert p.parse_args([]).backbone == 'efficientnet_lite0'
    with pytest.raises(SystemExit): p.parse_args(['--backbone', 'vgg16'])

@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_validate_images_any_float_dtype(dtype):
    x = torch.rand(1, 3, 32, 32).to(dtype)
    assert validate_images(x) is x
    with pytest.raises(ValueError, match='0-255'): validate_images(x * 255)
    x[0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='NaN or inf'): validate_images(x)

def test_validate_images_with_gradient():
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    assert validate_images(x) is x
    with pytest.raises(ValueError, match='already normalised'): validate_images(x * 4 - 2)

def test_pick_levels_takes_the_last_at_each_stride():
    assert pick_levels([2, 2, 4, 4, 4, 8, 16, 32]) == [4, 5, 6]
    assert pick_levels((4, 8, 16), strides=(8,)) == [1]
    with pytest.raises(ValueError, match=r'strides \[16\]'): pick_levels([2, 4, 8, 32])
