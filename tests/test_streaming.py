"""Data larger than memory: row views of memory maps, lazily decoded folders."""

import numpy as np
import pytest
import torch
from PIL import Image

from aelab.data import (
    BadImageError,
    ImageFolderStream,
    ImageRows,
    load_dataset,
    split_dataset,
    split_indices,
)
from aelab.models import create_model
from aelab.tasks import run_pretrain
from aelab.training import PretrainConfig, pretrain


def squares_array(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        s = int(rng.integers(3, size // 2))
        r, c = rng.integers(0, size - s, 2)
        a[i, r : r + s, c : c + s] = 255
    return a


@pytest.fixture
def npy(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, squares_array(60))
    return path


def test_rows_read_in_batch_order_from_a_memory_map(npy):
    ds = load_dataset(npy)
    base = torch.from_numpy(np.load(npy)).unsqueeze(1)
    rows = ImageRows(ds, index=np.arange(5, 55))
    pos = torch.tensor([7, 3, 49, 0, 3, 20])
    assert torch.equal(rows.read(pos), base[5 + pos])
    sub = rows.subset([2, 1])
    assert len(sub) == 2 and torch.equal(sub.read(torch.tensor([0, 1])), base[[7, 6]])
    with pytest.raises(ValueError, match="outside"):
        ImageRows(ds, index=[60])


def test_split_indices_match_split_dataset(npy):
    ds = load_dataset(npy)
    parts = split_dataset(ds, val_fraction=0.2, seed=3)
    lab, rest, val = split_indices(ImageRows(ds), val_fraction=0.2, seed=3)
    assert lab is None
    assert np.array_equal(rest, parts.unlabeled_index) and np.array_equal(val, parts.val_index)


def _train(data, val, workers=0):
    torch.manual_seed(0)
    model = create_model("convae_tiny")
    config = PretrainConfig(epochs=2, batch_size=8, lr=3e-3, device="cpu", progress=False)
    result = pretrain(model, data, val=val, config=config, num_workers=workers)
    return model, result


def test_training_on_a_view_equals_training_on_a_copy(npy):
    ds = load_dataset(npy)
    train_idx, val_idx = np.arange(0, 50), np.arange(50, 60)
    m_copy, r_copy = _train(ds.subset(train_idx), ds.subset(val_idx))
    m_view, r_view = _train(ImageRows(ds, train_idx), ImageRows(ds, val_idx))
    assert r_view.history[-1]["train_loss"] == r_copy.history[-1]["train_loss"]
    for (k, a), b in zip(m_copy.state_dict().items(), m_view.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # Worker processes read the same batches.
    m_work, _ = _train(ImageRows(ds, train_idx), ImageRows(ds, val_idx), workers=1)
    for a, b in zip(m_copy.state_dict().values(), m_work.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _png_folder(root, n_per_class=4):
    arr = squares_array(2 * n_per_class, size=20, seed=1)
    for k, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(arr[k * n_per_class + i]).save(root / name / f"{name}{i}.png")
    return root


def test_folder_stream_decodes_like_the_eager_loader(tmp_path):
    root = _png_folder(tmp_path / "imgs")
    eager = load_dataset(root, image_size=16, channels=1)
    stream = ImageFolderStream(root, image_size=16, channels=1)
    assert len(stream) == len(eager) == 8
    assert stream.class_names == eager.class_names and stream.ids == eager.ids
    assert torch.equal(stream.labels, eager.labels)
    assert torch.equal(stream.read(torch.arange(8)), eager.images)
    # Size and channels found from the headers when not given.
    auto = ImageFolderStream(root)
    assert auto.image_shape == (1, 20, 20)
    # A damaged file is refused when a batch reaches it, naming it.
    bad = root / "b" / "b3.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(BadImageError, match="b3.png"):
        stream.read(torch.tensor([7]))


def test_run_pretrain_streams_a_folder_and_an_array(tmp_path, npy):
    root = _png_folder(tmp_path / "imgs", n_per_class=8)
    kw = dict(model="convae_tiny", epochs=1, batch_size=4, val_fraction=0.25, device="cpu",
              progress=False, stream=True)  # fmt: skip
    res = run_pretrain(root, tmp_path / "out_folder", **kw)
    assert (res.n_train, res.n_val) == (12, 4)
    res = run_pretrain(npy, tmp_path / "out_npy", max_images=40, **kw)
    assert (res.n_train, res.n_val) == (30, 10)
    with pytest.raises(ValueError, match="model's size"):
        run_pretrain(npy, tmp_path / "out_bad", **{**kw, "model": "convae_fmnist"})
