"""Data loaders on files written here in the real formats: a user's MVTec-layout folder, bad input, tiny CIFAR-10 and
Fashion-MNIST files."""
import hashlib, pickle
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from hfrae.data import MVTecFolder, list_categories, one_class_datasets, unpack_idx, write_idx

def save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True); Image.fromarray(array).save(path, **kw)

def square_image(h, w, box, channels=3):
    "A dark image with a bright rectangle at `box` = (top, bottom, left, right), in pixels; also its 0/255 mask."
    img = np.full((h, w, channels) if channels > 1 else (h, w), 30, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    t, b, l, r = box
    img[t:b, l:r] = 230; mask[t:b, l:r] = 255
    return img, mask

@pytest.fixture
def category(tmp_path):
    "A user's own category: 80×120 photos (PNG, JPEG, grayscale, RGBA), two defect types with masks, junk files."
    root = tmp_path/'parts'
    for i, ext in enumerate(('png', 'jpg', 'JPEG', 'bmp')):
        save(root/f'train/good/img{i}.{ext}', np.full((80, 120, 3), 30 + i, np.uint8))
    save(root/'test/good/ok.png', np.full((80, 120), 30, np.uint8))                     # grayscale
    for name, box in (('a', (10, 30, 20, 60)), ('b', (40, 80, 60, 120))):
        img, mask = square_image(80, 120, box)
        save(root/f'test/dent/{name}.png', img); save(root/f'ground_truth/dent/{name}_mask.png', mask)
    img, mask = square_image(80, 120, (0, 8, 0, 120), channels=4); img[..., 3] = 255      # RGBA
    save(root/'test/scratch/s.png', img); save(root/'ground_truth/scratch/s_mask.png', mask)
    for junk in ('train/good/.DS_Store', 'train/good/Thumbs.db', 'train/good/notes.txt', 'test/.DS_Store',
                 'test/dent/desktop.ini', 'ground_truth/dent/Thumbs.db', 'train/good/._img0.png'):
        (root/junk).write_bytes(b'\x00\x05\x16\x07 junk')
    return root

def test_user_category_counts_labels_types_and_alignment(category):
    train, test = MVTecFolder(category, 'train', 64), MVTecFolder(category, 'test', (64, 96))
    assert (len(train), len(test), test.has_masks, test.image_size) == (4, 4, True, (64, 96))
    assert test.defect_types == ['dent', 'dent', 'good', 'scratch'] and test.labels == [1, 1, 0, 1]
    assert list_categories(category.parent) == ['parts']
    for item in test:
        assert item['image'].shape == (3, 64, 96) and item['mask'].shape == (64, 96)
        assert set(item['mask'].unique().tolist()) <= {0., 1.}
        assert Path(item['path']).parent.name == item['defect_type']
        if item['label']:   # the bright rectangle and the mask coincide (away from its blurred border)
            bright = item['image'].mean(0) > 0.5
            assert item['mask'].sum() > 0 and (bright == item['mask'].bool()).float().mean() > 0.97
    batch = next(iter(DataLoader(test, batch_size=4)))
    assert batch['image'].shape == (4, 3, 64, 96) and batch['label'].tolist() == [1, 1, 0, 1]
    # the default size is 256², and a train item of a 120×80 photo is resized, not cropped
    assert MVTecFolder(category)[0]['image'].shape == (3, 256, 256)

def test_folder_without_ground_truth(category):
    import shutil; shutil.rmtree(category/'ground_truth')
    test = MVTecFolder(category, 'test', 32)
    assert not test.has_masks and test.labels == [1, 1, 0, 1]
    assert all(item['mask'].sum() == 0 for item in test)

def one_line(excinfo): return '\n' not in str(excinfo.value)

def test_bad_input_sweep(category, tmp_path):
    # a path that does not exist
    with pytest.raises(FileNotFoundError, match='no such folder') as e: MVTecFolder(tmp_path/'nope')
    assert one_line(e)
    with pytest.raises(FileNotFoundError, match='no such folder'): list_categories(tmp_path/'nope')
    # a folder that is not in the layout
    with pytest.raises(FileNotFoundError, match='train does not exist; expected .* MVTec AD layout'):
        MVTecFolder(tmp_path)
    # a corrupt image names its file, when it is read
    (category/'train/good/img1.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated jpeg')
    train = MVTecFolder(category, image_size=32)
    with pytest.raises(ValueError, match=r'cannot read image .*img1\.jpg') as e: train[1]
    assert one_line(e)
    png = (category/'test/good/ok.png').read_bytes(); (category/'test/good/ok.png').write_bytes(png[:len(png) // 2])
    with pytest.raises(ValueError, match=r'cannot read image .*ok\.png'): MVTecFolder(category, 'test', 32)[2]
    # a mask whose size differs from its image
    save(category/'ground_truth/dent/a_mask.png', np.zeros((40, 60), np.uint8))
    with pytest.raises(ValueError, match=r'mask .*a_mask\.png is 60x40 pixels but its image .*a\.png is 120x80') as e:
        MVTecFolder(category, 'test', 32)[0]
    assert one_line(e)
    # a missing mask for an anomalous image while ground_truth/ exists
    (category/'ground_truth/scratch/s_mask.png').unlink()
    with pytest.raises(FileNotFoundError,
                       match=r'missing mask .*s_mask\.png \(or s\.png\) for anomalous image .*s\.png') as e:
        MVTecFolder(category, 'test')
    assert one_line(e)
    # an empty train/good (junk only), and an empty test/
    for p in (category/'train/good').glob('img*'): p.unlink()
    with pytest.raises(ValueError, match='no images found in .*train/good') as e: MVTecFolder(category)
    assert one_line(e)
    import shutil; shutil.rmtree(category/'test'); (category/'test/dent').mkdir(parents=True)
    with pytest.raises(ValueError, match='no images found in .*test'): MVTecFolder(category, 'test')
    # bad arguments
    with pytest.raises(ValueError, match='multiple of 16'): MVTecFolder(category, image_size=100)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"): MVTecFolder(category, 'validation')

def write_cifar(root, train_labels, test_labels):
    "Tiny CIFAR-10 python batches: image i of a batch is the constant colour (label*20, 7, 200)."
    folder = root/'cifar-10-batches-py'; folder.mkdir(parents=True)
    def batch(labels):
        data = np.zeros((len(labels), 3, 32, 32), np.uint8)
        for i, l in enumerate(labels): data[i, 0], data[i, 1], data[i, 2] = l * 20, 7, 200
        return {'data': data.reshape(len(labels), -1), 'labels': list(labels)}
    for i in range(5): (folder/f'data_batch_{i + 1}').write_bytes(pickle.dumps(batch(train_labels[i::5])))
    (folder/'test_batch').write_bytes(pickle.dumps(batch(test_labels)))
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
    (folder/'batches.meta').write_bytes(pickle.dumps({'label_names': names}))
    return folder

def md5(path): return hashlib.md5(path.read_bytes()).hexdigest()

def test_cifar10_one_class(tmp_path, monkeypatch):
    folder = write_cifar(tmp_path, train_labels=[3, 3, 5, 3, 1, 3, 0], test_labels=[3, 9, 5, 3])
    # torchvision checks each batch's MD5 against the real files'; tell it the tiny files' MD5s instead
    C = datasets.CIFAR10
    monkeypatch.setattr(C, 'train_list', [[n, md5(folder/n)] for n, _ in C.train_list])
    monkeypatch.setattr(C, 'test_list', [[n, md5(folder/n)] for n, _ in C.test_list])
    monkeypatch.setattr(C, 'meta', {**C.meta, 'md5': md5(folder/'batches.meta')})
    train, test = one_class_datasets('cifar10', 3, root=tmp_path, image_size=32)
    assert (len(train), len(test), train.labels, test.labels) == (4, 4, [0, 0, 0, 0], [0, 1, 1, 0])
    item = test[1]
    assert (item['defect_type'], item['label'], item['path'], test[0]['defect_type']) == ('truck', 1, '', 'good')
    assert torch.allclose(item['image'][:, 5, 5], torch.tensor([180, 7, 200]) / 255)
    batch = next(iter(DataLoader(train, batch_size=4)))
    assert batch['image'].shape == (4, 3, 32, 32) and batch['mask'].shape == (4, 32, 32)
    assert torch.allclose(batch['image'][:, 0], torch.full((4, 32, 32), 60 / 255))

def test_cifar10_missing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='cifar10 not found .*cifar-10-batches-py: pass download=True'):
        one_class_datasets('cifar10', 0, root=tmp_path)

def test_fashion_mnist_from_gzipped_idx(tmp_path):
    src = tmp_path/'deb'; src.mkdir()
    labels = {'train': np.array([1, 1, 4, 1]), 't10k': np.array([1, 9, 0])}
    for split, l in labels.items():
        images = np.zeros((len(l), 28, 28)); images[:, :14] = 255     # top half white
        write_idx(src/f'{split}-images-idx3-ubyte.gz', images); write_idx(src/f'{split}-labels-idx1-ubyte.gz', l)
    raw = unpack_idx(src, tmp_path/'root')
    assert sorted(p.name for p in raw.iterdir()) == ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte',
                                                     'train-images-idx3-ubyte', 'train-labels-idx1-ubyte']
    train, test = one_class_datasets('fashion_mnist', 1, root=tmp_path/'root', image_size=64)
    assert (len(train), test.labels, [it['defect_type'] for it in test]) == (3, [0, 1, 1],
                                                                              ['good', 'Ankle boot', 'T-shirt/top'])
    img = test[0]['image']
    assert img.shape == (3, 64, 64) and torch.equal(img[0], img[1])
    assert img[:, :30].min() == 1 and img[:, 34:].max() == 0     # the white half stays on top after resizing
