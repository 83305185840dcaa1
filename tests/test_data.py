import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from aelab.data import (
    BadImageError,
    DataSpec,
    ImageDataset,
    conform,
    from_array,
    load_dataset,
    make_augment,
    parse_class_list,
    parse_ratio,
    select_classes,
    split_dataset,
    to_float,
)
from aelab.data import fashion_mnist as fm
from aelab.data import folder as folder_mod

RNG = np.random.default_rng(0)


def save_image(path: Path, size=(8, 6), mode="RGB", fmt=None) -> np.ndarray:
    """Save random pixels of ``size`` (width, height) and return what was written."""
    w, h = size
    shape = {"RGB": (h, w, 3), "RGBA": (h, w, 4), "L": (h, w)}[mode]
    arr = RNG.integers(0, 256, size=shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path, format=fmt)
    return arr


def quiet_load(*args, **kwargs) -> ImageDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(*args, progress=False, **kwargs)


# ---------------------------------------------------------------- folders


def test_labeled_folder_png_and_jpeg(tmp_path):
    a = save_image(tmp_path / "dog" / "a.png")
    save_image(tmp_path / "cat" / "b.jpg")
    save_image(tmp_path / "cat" / "nested" / "c.JPEG")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    ds = load_dataset(tmp_path, progress=False)
    assert ds.class_names == ["cat", "dog"]
    assert ds.ids == ["b", "c", "a"]
    assert ds.labels.tolist() == [0, 0, 1]
    assert ds.images.shape == (3, 3, 6, 8) and ds.images.dtype == torch.uint8
    # PNG is lossless and needs no resizing: the pixels come back exactly.
    assert torch.equal(ds.images[2], torch.from_numpy(a).permute(2, 0, 1))


def test_flat_grayscale_folder_is_unlabeled(tmp_path):
    arrs = [save_image(tmp_path / f"{i}.png", size=(5, 7), mode="L") for i in range(3)]
    ds = load_dataset(tmp_path, progress=False)
    assert ds.labels is None and ds.class_names is None
    assert ds.images.shape == (3, 1, 7, 5)
    assert torch.equal(ds.images[1, 0], torch.from_numpy(arrs[1]))


def test_channel_conversion_and_alpha(tmp_path):
    rgb = save_image(tmp_path / "rgb.png", mode="RGB")
    save_image(tmp_path / "rgba.png", mode="RGBA")
    ds1 = load_dataset(tmp_path, channels=1, progress=False)
    expect = np.array(Image.fromarray(rgb).convert("L"))
    assert ds1.images.shape[1] == 1
    assert torch.equal(ds1.images[ds1.ids.index("rgb"), 0], torch.from_numpy(expect))
    ds3 = load_dataset(tmp_path, progress=False)  # RGBA -> RGB, alpha dropped
    assert ds3.images.shape[1] == 3


def test_gray_to_rgb_repeats(tmp_path):
    g = save_image(tmp_path / "g.png", mode="L")
    ds = load_dataset(tmp_path, channels=3, progress=False)
    assert ds.images.shape == (1, 3, 6, 8)
    for c in range(3):
        assert torch.equal(ds.images[0, c], torch.from_numpy(g))


def test_mixed_sizes_resized_to_most_common_with_warning(tmp_path):
    save_image(tmp_path / "a.png", size=(8, 6))
    save_image(tmp_path / "b.png", size=(8, 6))
    save_image(tmp_path / "c.png", size=(13, 11))
    with pytest.warns(UserWarning, match="2 sizes") as record:
        ds = load_dataset(tmp_path, progress=False)
    # It names what exists (load_dataset's image_size=, the commands' --model), not an
    # --image-size option that no command has.
    text = str(record[0].message)
    assert "--image-size" not in text and "image_size=" in text and "--model" in text
    assert ds.images.shape == (3, 3, 6, 8)
    ds = load_dataset(tmp_path, image_size=(5, 7), progress=False)
    assert ds.images.shape == (3, 3, 5, 7)


def test_odd_size_letterbox_and_pad(tmp_path):
    Image.fromarray(np.full((4, 8), 200, np.uint8)).save(tmp_path / "wide.png")
    ds = load_dataset(tmp_path, image_size=8, fit="letterbox", progress=False)
    img = ds.images[0, 0]
    assert (img[2:6] == 200).all() and (img[:2] == 0).all() and (img[6:] == 0).all()
    ds = load_dataset(tmp_path, image_size=(6, 6), fit="pad", progress=False)
    img = ds.images[0, 0]
    assert (img[1:5] == 200).all() and (img[0] == 0).all() and (img[5] == 0).all()


def test_repeated_stems_get_relative_path_ids(tmp_path):
    save_image(tmp_path / "cat" / "001.png")
    save_image(tmp_path / "dog" / "001.png")
    ds = load_dataset(tmp_path, progress=False)
    assert ds.ids == ["cat/001.png", "dog/001.png"]


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images found"):
        load_dataset(tmp_path, progress=False)


def test_subfolders_plus_loose_images_is_an_error(tmp_path):
    save_image(tmp_path / "cat" / "a.png")
    save_image(tmp_path / "loose.png")
    with pytest.raises(ValueError, match="loose.png"):
        load_dataset(tmp_path, progress=False)


def test_corrupt_file_is_named_and_skip_bad_lists_it(tmp_path):
    save_image(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(BadImageError, match="broken.png.*skip_bad"):
        load_dataset(tmp_path, progress=False)
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 bad image.*broken\.png"):
        ds = load_dataset(tmp_path, skip_bad=True, progress=False)
    assert ds.ids == ["good"]
    assert [Path(p).name for p, _ in ds.skipped] == ["broken.png"]


@pytest.mark.parametrize("threads", [False, True])
@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_image_refused(tmp_path, monkeypatch, fmt, ext, threads):
    if threads:  # decode on the thread pool, as for large files
        monkeypatch.setattr(folder_mod, "_THREADED_MIN_BYTES", 0)
        for i in range(5):
            save_image(tmp_path / f"ok{i}.{ext}", size=(64, 64), fmt=fmt)
    path = tmp_path / f"cut.{ext}"
    save_image(path, size=(64, 64), fmt=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # Even when someone switched Pillow's global leniency on.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(BadImageError, match=f"cut.{ext}.*truncated"):
        load_dataset(tmp_path, progress=False)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


@pytest.mark.parametrize("target", [{}, {"image_size": 4, "channels": 3}])
def test_oversized_image_refused(tmp_path, monkeypatch, target):
    save_image(tmp_path / "small.png", size=(5, 5))
    save_image(tmp_path / "huge.png", size=(20, 10))
    monkeypatch.setattr(folder_mod, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadImageError, match=r"huge\.png.*200 pixels.*decompression bomb"):
        load_dataset(tmp_path, progress=False, **target)


# ---------------------------------------------------------------- arrays


def test_npy_gray_uint8_is_memory_mapped(tmp_path):
    x = RNG.integers(0, 256, size=(10, 5, 4), dtype=np.uint8)
    path = tmp_path / "imgs.npy"
    np.save(path, x)
    ds = load_dataset(path, progress=False)
    assert ds.images.shape == (10, 1, 5, 4) and ds.labels is None
    assert ds.ids[:3] == ["0", "1", "2"]
    assert torch.equal(ds.images[:, 0], torch.from_numpy(x))
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(path) in maps.read_text(), "the .npy should be memory-mapped, not read"
    # A row view reads only its rows, and they match the array.
    from aelab.data import ImageRows

    rows = ImageRows(ds, np.array([7, 2, 5]))
    assert rows.labels is None and torch.equal(
        rows.read(torch.arange(3))[:, 0], torch.from_numpy(x[[7, 2, 5]])
    )


def test_npy_float_rgb_converted(tmp_path):
    x = RNG.random((6, 4, 3, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", x)
    ds = load_dataset(tmp_path / "f.npy", progress=False)
    expect = np.rint(x * 255).astype(np.uint8).transpose(0, 3, 1, 2)
    assert ds.images.shape == (6, 3, 4, 3)
    assert torch.equal(ds.images, torch.from_numpy(expect))


def test_npy_channels_first_recognised(tmp_path):
    x = RNG.integers(0, 256, size=(3, 3, 9, 9), dtype=np.uint8)  # (N, C, H, W)
    np.save(tmp_path / "cf.npy", x)
    ds = load_dataset(tmp_path / "cf.npy", progress=False)
    assert torch.equal(ds.images, torch.from_numpy(x))


def test_float_out_of_range(tmp_path):
    np.save(tmp_path / "f.npy", np.full((2, 4, 4), 3.0))
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide by 255"):
        load_dataset(tmp_path / "f.npy", progress=False)


@pytest.mark.parametrize("shape", [(5,), (5, 4), (2, 3, 4, 4, 1), (2, 9, 9, 9)])
def test_wrong_rank_or_layout(tmp_path, shape):
    np.save(tmp_path / "w.npy", np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match="shape"):
        load_dataset(tmp_path / "w.npy", progress=False)


def test_pickled_npy_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        load_dataset(tmp_path / "o.npy", progress=False)


def test_npz_with_labels_and_class_names(tmp_path):
    x = RNG.integers(0, 256, size=(6, 4, 4), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", images=x, labels=y, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(tmp_path / "d.npz", progress=False)
    assert ds.labels.tolist() == y.tolist() and ds.class_names == ["a", "b", "c"]
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    assert load_dataset(tmp_path / "xy.npz", progress=False).labels.tolist() == y.tolist()
    # Members are read by name: an archive without images is refused, not read from its
    # first member (tests/test_input_checks.py has the command-line case).
    np.savez_compressed(tmp_path / "first.npz", whatever=x)
    with pytest.raises(ValueError, match=r"no 'images' array in the \.npz \(it holds 'whatever'\)"):
        load_dataset(tmp_path / "first.npz", progress=False)


def test_labels_files_npy_and_csv(tmp_path):
    x = RNG.integers(0, 256, size=(4, 3, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([3, 1, 0, 2]))
    ds = load_dataset(tmp_path / "x.npy", labels=tmp_path / "y.npy", progress=False)
    assert ds.labels.tolist() == [3, 1, 0, 2]
    (tmp_path / "y.csv").write_text("id,label\n0,shoe\n1,bag\n2,shoe\n3,coat\n")
    ds = load_dataset(tmp_path / "x.npy", labels=tmp_path / "y.csv", progress=False)
    assert ds.class_names == ["bag", "coat", "shoe"] and ds.labels.tolist() == [2, 0, 2, 1]
    (tmp_path / "plain.csv").write_text("1\n0\n1\n0\n")
    ds = load_dataset(tmp_path / "x.npy", labels=tmp_path / "plain.csv", progress=False)
    assert ds.labels.tolist() == [1, 0, 1, 0]


def test_labels_out_of_range_or_wrong_count(tmp_path):
    x = np.zeros((4, 3, 3), np.uint8)
    np.savez(tmp_path / "neg.npz", images=x, labels=np.array([0, -1, 0, 1]))
    with pytest.raises(ValueError, match="label -1 in row 1 is negative; labels number the"):
        load_dataset(tmp_path / "neg.npz", progress=False)
    np.savez(
        tmp_path / "big.npz",
        images=x,
        labels=np.array([0, 1, 2, 5]),
        class_names=np.array(["a", "b", "c"]),
    )
    with pytest.raises(ValueError, match="out of range"):
        load_dataset(tmp_path / "big.npz", progress=False)
    np.savez(tmp_path / "few.npz", images=x, labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="2 labels for 4 images"):
        load_dataset(tmp_path / "few.npz", progress=False)


def test_label_far_outside_the_classes_refused(tmp_path):
    # One stray 99 among 0-9 used to be accepted and fine-tuning built a 100-class head.
    x = np.zeros((21, 3, 3), np.uint8)
    y = np.r_[np.arange(10), np.arange(10), 99]
    np.savez(tmp_path / "stray.npz", images=x, labels=y)
    with pytest.raises(ValueError) as err:
        load_dataset(tmp_path / "stray.npz", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "stray.npz" in msg and "label 99 (row 20)" in msg
    assert "give class_names in the .npz, or renumber the labels 0..10" in msg
    # With class names that cover it, label 99 is a class like any other.
    names = np.array([f"c{i}" for i in range(100)])
    np.savez(tmp_path / "named.npz", images=x, labels=y, class_names=names)
    assert load_dataset(tmp_path / "named.npz", progress=False).num_classes == 100
    # A separate labels file: the fix names what such a file can hold.
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(ValueError, match=r"y\.npy: label 99 .*write class names instead"):
        load_dataset(tmp_path / "x.npy", labels=tmp_path / "y.npy", progress=False)


def test_labels_with_gaps_accepted_up_to_half_unused(tmp_path):
    x = np.zeros((9, 3, 3), np.uint8)
    # A test set without class 7: still 10 classes, as a user expects.
    np.savez(tmp_path / "gap.npz", images=x, labels=np.array([0, 1, 2, 3, 4, 5, 6, 8, 9]))
    assert load_dataset(tmp_path / "gap.npz", progress=False).num_classes == 10
    # Classes 0..5 with only 0, 2, 5 present: 3 of 6 occur, the limit.
    np.savez(tmp_path / "half.npz", images=x[:3], labels=np.array([0, 2, 5]))
    assert load_dataset(tmp_path / "half.npz", progress=False).num_classes == 6
    np.savez(tmp_path / "sparse.npz", images=x[:3], labels=np.array([0, 2, 6]))
    with pytest.raises(ValueError, match="would make 7 classes but only 3 distinct"):
        load_dataset(tmp_path / "sparse.npz", progress=False)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0.0, np.nan, 1.0]), "whole numbers, got nan in row 1"),
        (np.array([0.0, 1.0, np.inf]), "whole numbers, got inf in row 2"),
        (np.array([0.0, 1.5, 1.0]), "whole numbers, got 1.5 in row 1"),
        (np.array([0.0, -2.0, 1.0]), "label -2.0 in row 1 is negative"),
        (np.array([0, 1, 2**64 - 1], dtype=np.uint64), "far too large"),
        (np.array([0.0, 1.0, 1e30]), "far too large"),
        (np.array([[0, 1], [1, 0], [0, 1]]), r"1-D \(one per image\), got shape \(3, 2\)"),
        (np.array([1 + 2j, 0, 1]), "unsupported label dtype complex128"),
    ],
)
def test_bad_label_values_refused(tmp_path, labels, match):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 3, 3), np.uint8), labels=labels)
    with pytest.raises(ValueError, match=match) as err:
        load_dataset(tmp_path / "d.npz", progress=False)
    assert "d.npz labels" in str(err.value)


def test_bool_and_column_labels_accepted(tmp_path):
    x = np.zeros((3, 3, 3), np.uint8)
    np.savez(tmp_path / "b.npz", images=x, labels=np.array([True, False, True]))
    assert load_dataset(tmp_path / "b.npz", progress=False).labels.tolist() == [1, 0, 1]
    np.savez(tmp_path / "c.npz", images=x, labels=np.array([[2], [0], [1]]))
    assert load_dataset(tmp_path / "c.npz", progress=False).labels.tolist() == [2, 0, 1]


def test_repeated_class_names_refused(tmp_path):
    x = np.zeros((2, 3, 3), np.uint8)
    np.savez(tmp_path / "r.npz", images=x, labels=[0, 1], class_names=np.array(["a", "a"]))
    with pytest.raises(ValueError, match="class_names repeat 'a'"):
        load_dataset(tmp_path / "r.npz", progress=False)
    np.savez(tmp_path / "b.npz", images=x, labels=[0, 1], class_names=np.array([b"x", b"y"]))
    assert load_dataset(tmp_path / "b.npz", progress=False).class_names == ["x", "y"]


@pytest.mark.parametrize("shape", [(3, 0, 4), (3, 4, 0, 1), (0, 4, 4)])
def test_images_without_pixels_refused(tmp_path, shape):
    np.save(tmp_path / "z.npy", np.zeros(shape, np.uint8))
    with pytest.raises(ValueError, match="no pixels|holds no images"):
        load_dataset(tmp_path / "z.npy", progress=False, image_size=4)


def test_damaged_or_misnamed_array_files(tmp_path):
    x = RNG.integers(0, 256, size=(4, 5, 5), dtype=np.uint8)
    np.savez(tmp_path / "good.npz", images=x, labels=np.array([0, 1, 0, 1]))
    data = (tmp_path / "good.npz").read_bytes()
    # Damaged: truncated, or one byte changed in the zip and npy headers (at the start
    # and in the central directory at the end). zipfile then raised NotImplementedError
    # or RuntimeError, which escaped as tracebacks; now: a dataset or a one-line error.
    damaged = [data[:n] for n in (0, 40, len(data) // 2, len(data) - 1)]
    for pos in [*range(120), *range(len(data) - 160, len(data))]:
        b = bytearray(data)
        b[pos] ^= 0xFF
        damaged.append(bytes(b))
    refused = 0
    for blob in damaged:
        (tmp_path / "bad.npz").write_bytes(blob)
        try:
            load_dataset(tmp_path / "bad.npz", progress=False)
        except ValueError as e:
            assert "bad.npz" in str(e) and "\n" not in str(e)
            refused += 1
    assert refused > len(damaged) // 2
    # Misnamed: the content decides.
    (tmp_path / "archive.npy").write_bytes(data)
    assert load_dataset(tmp_path / "archive.npy", progress=False).labels.tolist() == [0, 1, 0, 1]
    np.save(tmp_path / "plain.npy", x)
    (tmp_path / "plain.npz").write_bytes((tmp_path / "plain.npy").read_bytes())
    assert load_dataset(tmp_path / "plain.npz", progress=False).images.shape == (4, 1, 5, 5)
    with pytest.raises(ValueError, match="an .npz archive, not one array"):
        load_dataset(tmp_path / "plain.npy", labels=tmp_path / "archive.npy", progress=False)


def test_image_size_beyond_memory_refused_before_allocating(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((10, 4, 4), np.uint8))
    save_image(tmp_path / "folder" / "a.png")
    ds = load_dataset(tmp_path / "x.npy", progress=False)
    # A machine with 1 kB: 10 images of 1x16x16 (2.56 kB) do not fit.
    monkeypatch.setattr("aelab.data.transforms.physical_memory", lambda: 1000)
    with pytest.raises(
        ValueError, match=r"x\.npy: 10 images of 1x16x16 need .* smaller image_size"
    ):
        load_dataset(tmp_path / "x.npy", image_size=16, progress=False)
    with pytest.raises(ValueError, match=r"folder: 1 images of 3x64x64 need"):
        load_dataset(tmp_path / "folder", image_size=64, progress=False)
    with pytest.raises(ValueError, match="conform: 10 images of 3x16x16 need"):
        conform(ds, image_size=16, channels=3)
    assert load_dataset(tmp_path / "x.npy", image_size=8, progress=False).images.shape[0] == 10


def test_from_array_applies_the_same_label_rules():
    x = np.zeros((3, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="label 40 .*pass class_names, or renumber"):
        from_array(x, [0, 1, 40])
    assert from_array(x, [0, 1, 40], class_names=[f"c{i}" for i in range(41)]).num_classes == 41
    with pytest.raises(ValueError, match="whole numbers"):
        from_array(x, np.array([0.0, 0.5, 1.0]))


def test_image_dataset_rejects_labels_beyond_class_names():
    with pytest.raises(ValueError, match="out of range"):
        ImageDataset(
            torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"], ["x", "y"]
        )


# ---------------------------------------------------------------- specs and Fashion-MNIST


def test_spec_parsing(tmp_path):
    assert DataSpec.parse("fashion-mnist").split == "train"
    assert DataSpec.parse("fashion-mnist:test").split == "test"
    assert DataSpec.parse("fashion-mnist", split="all").split == "all"
    with pytest.raises(ValueError, match="fashion-mnist"):
        DataSpec.parse("imagenet")
    with pytest.raises(ValueError, match="train|test|all"):
        DataSpec.parse("fashion-mnist:valid")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        DataSpec.parse(str(tmp_path / "missing.npy"))
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot read"):
        DataSpec.parse(tmp_path / "t.txt")


def _write_idx(path, array):
    """An IDX file of unsigned bytes, gzipped, as the Debian package ships them."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path, monkeypatch):
    """The IDX reader, on files written here from the bundled subset's rows."""
    with np.load(fm.BUNDLED_PATH) as z:
        parts = {p: (z[f"x_{p}"][:40], z[f"y_{p}"][:40]) for p in ("train", "test")}
    for part, (img_name, lab_name) in fm._FILES.items():
        x, y = parts[part]
        _write_idx(tmp_path / img_name, x)
        _write_idx(tmp_path / lab_name, y)
    monkeypatch.setenv("AELAB_FASHION_MNIST_DIR", str(tmp_path))
    ds = load_dataset("fashion-mnist:test", image_size=32, channels=1, fit="pad", progress=False)
    assert ds.images.shape == (40, 1, 32, 32) and ds.class_names[0] == "T-shirt/top"
    assert ds.ids[:2] == ["test-0", "test-1"]
    full = load_dataset("fashion-mnist:train", progress=False)
    assert torch.equal(full.images[:, 0], torch.from_numpy(parts["train"][0]))
    assert full.labels.tolist() == parts["train"][1].tolist()
    _write_idx(tmp_path / fm._FILES["test"][1], parts["test"][1][:10])
    with pytest.raises(ValueError, match="40 test images but 10 labels"):
        load_dataset("fashion-mnist:test", progress=False)


def test_fashion_mnist_bundled_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("AELAB_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="apt-get install -y dataset-fashion-mnist"):
        train = load_dataset("fashion-mnist", progress=False)
    assert train.images.shape == (3000, 1, 28, 28)
    assert np.bincount(train.labels.numpy()).tolist() == [300] * 10
    assert train.ids[0].startswith("train-")
    with pytest.warns(UserWarning):
        both = load_dataset("fashion-mnist:all", image_size=16, progress=False)
    assert both.images.shape == (4000, 1, 16, 16) and both.ids[-1].startswith("test-")
    monkeypatch.setattr(fm, "BUNDLED_PATH", tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", progress=False)


def test_bundled_subset_is_small():
    assert fm.BUNDLED_PATH.stat().st_size < 3_000_000


# ---------------------------------------------------------------- conform


def test_conform_resize_pad_and_luminance():
    img = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    img[:, 0] = 100
    img[:, 1] = 200
    ds = ImageDataset(img, None, ["a"])
    gray = conform(ds, image_size=None, channels=1)
    assert gray.images.shape == (1, 1, 4, 4)
    assert int(gray.images[0, 0, 0, 0]) == round(0.299 * 100 + 0.587 * 200)
    big = conform(ds, image_size=8, channels=None)  # constant image stays constant
    assert big.images.shape == (1, 3, 8, 8) and (big.images[:, 1] == 200).all()
    padded = conform(ds, image_size=(6, 6), channels=3, fit="pad")
    assert (padded.images[0, 1, 1:5, 1:5] == 200).all() and padded.images[0, 1, 0].sum() == 0
    assert conform(ds, image_size=4, channels=3) is ds
    with pytest.raises(ValueError, match="channels"):
        conform(ds, image_size=4, channels=2)


# ---------------------------------------------------------------- splits


def labeled_ds(per_class=(10, 10, 10, 10, 10)) -> ImageDataset:
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(per_class)])
    n = labels.size
    return ImageDataset(
        images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8),
        labels=torch.from_numpy(labels),
        ids=[str(i) for i in range(n)],
        class_names=[f"c{k}" for k in range(len(per_class))],
    )


def test_split_counts_disjoint_and_seeded():
    ds = labeled_ds()
    s = split_dataset(ds, labels_per_class=3, val_per_class=2, seed=1)
    assert s.summary() == {"labeled": 15, "unlabeled": 40, "val": 10}
    assert np.bincount(s.labeled.labels.numpy()).tolist() == [3] * 5
    assert np.bincount(s.val.labels.numpy()).tolist() == [2] * 5
    assert not set(s.val_index) & set(s.unlabeled_index)
    assert set(s.labeled_index) <= set(s.unlabeled_index)
    assert sorted([*s.val_index, *s.unlabeled_index]) == list(range(50))
    assert s.unlabeled.labels is None
    assert [ds.ids[i] for i in s.labeled_index] == s.labeled.ids
    again = split_dataset(ds, labels_per_class=3, val_per_class=2, seed=1)
    other = split_dataset(ds, labels_per_class=3, val_per_class=2, seed=2)
    assert np.array_equal(again.labeled_index, s.labeled_index)
    assert not np.array_equal(other.labeled_index, s.labeled_index)


def test_split_fractions_and_errors():
    ds = labeled_ds()
    s = split_dataset(ds, labeled_fraction=0.5, val_fraction=0.2)
    assert s.summary() == {"labeled": 20, "unlabeled": 40, "val": 10}
    s = split_dataset(ds, val_fraction=0.0)
    assert s.val is None and len(s.labeled) == 50
    with pytest.raises(ValueError, match="'c2' has 3 images"):
        split_dataset(labeled_ds((10, 10, 3)), labels_per_class=5, val_fraction=0.0)
    with pytest.raises(ValueError, match="not both"):
        split_dataset(ds, labels_per_class=1, labeled_fraction=0.5)


def test_split_unlabeled_dataset():
    ds = ImageDataset(
        torch.zeros(20, 1, 2, 2, dtype=torch.uint8), None, [str(i) for i in range(20)]
    )
    s = split_dataset(ds, val_fraction=0.25)
    assert s.labeled is None and len(s.val) == 5 and len(s.unlabeled) == 15
    with pytest.raises(ValueError, match="labeled dataset"):
        split_dataset(ds, labels_per_class=2)


def test_select_classes_ratio_counts_and_names():
    ds = labeled_ds((100, 100, 100, 100))
    sub = select_classes(ds, [0, "c1", 2], ratio=(2, 1, 1), n=200, seed=0)
    assert np.bincount(sub.labels.numpy(), minlength=4).tolist() == [100, 50, 50, 0]
    sub = select_classes(ds, ["3", 1], ratio=(1, 2))  # as many as the ratio allows
    assert np.bincount(sub.labels.numpy(), minlength=4).tolist() == [0, 100, 0, 50]
    sub = select_classes(ds, [2, 0], counts=[5, 7], relabel=True)
    assert sub.class_names == ["c2", "c0"] and np.bincount(sub.labels.numpy()).tolist() == [5, 7]
    assert np.array_equal(
        select_classes(ds, [1], n=10, seed=3).ids, select_classes(ds, [1], n=10, seed=3).ids
    )
    with pytest.raises(ValueError, match="fewer than the 150"):
        select_classes(ds, [0, 1], counts=[150, 1])
    with pytest.raises(ValueError, match="unknown class 'shoe'"):
        select_classes(ds, ["shoe"])


def test_cli_parsers_for_classes_and_ratio():
    assert parse_class_list("0, 1,Coat") == [0, 1, "Coat"]
    assert parse_ratio("2:1:1") == [2.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="2:1:1"):
        parse_ratio("two:one")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_class_list("0,,1")
    assert parse_class_list("2,²") == [2, "²"]
    with pytest.raises(ValueError, match="-1 is not a class; indices start at 0"):
        parse_class_list("0,-1")
    with pytest.raises(ValueError, match="given twice"):
        parse_class_list("1,01")


@pytest.mark.parametrize("text", ["2:0:1", "2:-1:1", "nan:1", "1:inf", "0:0", "1e308:1e308"])
def test_parse_ratio_refuses_zero_negative_and_non_finite_parts(text):
    # "2:0:1" used to pass and --target-ratio then printed a 5e14 % deviation.
    with pytest.raises(ValueError, match=f"ratio {text!r}"):
        parse_ratio(text)
    assert parse_ratio("0.5,1.5") == [0.5, 1.5]


# ---------------------------------------------------------------- batches and augmentation


def test_to_float():
    f = to_float(torch.tensor([0, 255], dtype=torch.uint8))
    assert f.dtype == torch.float32 and f.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="uint8"):
        to_float(f)


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_shape_range_and_seed(channels):
    aug = make_augment("standard")
    x = torch.rand(8, channels, 12, 10)
    torch.manual_seed(0)
    y1 = aug(x)
    torch.manual_seed(0)
    y2 = aug(x)
    y3 = aug(x)
    assert y1.shape == x.shape and y1.dtype == x.dtype
    assert y1.min() >= 0 and y1.max() <= 1
    assert torch.equal(y1, y2) and not torch.equal(y1, y3) and not torch.equal(y1, x)
    assert torch.equal(aug.eval()(x), x)


def test_augment_none_is_identity_and_errors():
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(make_augment("none")(x), x)
    with pytest.raises(ValueError, match="none, standard"):
        make_augment("heavy")
    with pytest.raises(ValueError, match="allowed: hflip"):
        make_augment("standard", vflip=0.5)
    with pytest.raises(ValueError, match="hflip=2"):
        make_augment("standard", hflip=2)
    with pytest.raises(ValueError, match="to_float"):
        make_augment()(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


def test_augment_flip_paths_agree():
    x = torch.rand(3, 3, 6, 9)
    plain = make_augment("none", hflip=1.0)(x)
    assert torch.equal(plain, x.flip(-1))
    # The affine path folds the flip into the warp matrix; with a zoom of ~1 it is the same flip.
    warped = make_augment("none", hflip=1.0, scale=(1.0, 1.0 + 1e-7))(x)
    assert torch.allclose(warped, x.flip(-1), atol=1e-4)


def test_augment_colour_matches_stepwise_reference():
    """The one-matrix colour jitter equals brightness -> contrast -> saturation -> hue in turn."""
    aug = make_augment("none", brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
    x = 0.4 + 0.2 * torch.rand(5, 3, 4, 4)  # mid-range: no clipping anywhere
    torch.manual_seed(7)
    got = aug(x)
    torch.manual_seed(7)
    u = torch.rand(5, 9)[:, 1:5]
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    out = []
    for i in range(5):
        b, c, s = (1 + 0.2 * (2 * u[i, j] - 1) for j in range(3))
        h = 0.05 * (2 * u[i, 3] - 1) * 2 * math.pi
        xi = x[i : i + 1] * b
        xi = c * xi + (1 - c) * (xi * luma).sum(1, keepdim=True).mean()
        xi = s * xi + (1 - s) * (xi * luma).sum(1, keepdim=True)
        q = torch.einsum("ij,bjhw->bihw", yiq, xi)
        i_, q_ = q[:, 1].clone(), q[:, 2].clone()
        q[:, 1] = math.cos(h) * i_ - math.sin(h) * q_
        q[:, 2] = math.sin(h) * i_ + math.cos(h) * q_
        out.append(torch.einsum("ij,bjhw->bihw", torch.linalg.inv(yiq), q))
    assert torch.allclose(got, torch.cat(out).clamp(0, 1), atol=1e-5)


def test_augment_affine_geometry_on_non_square_image():
    """A 90-degree turn moves a pixel to where a true rotation puts it, despite H != W."""
    x = torch.zeros(1, 1, 8, 12)
    x[0, 0, 3, 8] = 1.0  # centred pixel coords (x, y) = (2.5, -0.5)
    aug = make_augment("none", degrees=90.0, translate=0.25)
    flip = torch.tensor([False])
    turned = aug._affine(x, torch.tensor([[1.0, 0.0, 0.5, 0.5]]), flip)[0, 0]
    # (2.5, -0.5) turned by +-90 degrees is (0.5, 2.5) or (-0.5, -2.5): pixel (6, 6) or (1, 5).
    pos = divmod(int(turned.argmax()), 12)
    assert pos in {(6, 6), (1, 5)} and float(turned.max()) == pytest.approx(1.0, abs=1e-4)
    shifted = aug._affine(x, torch.tensor([[0.5, 0.0, 1.0, 0.5]]), flip)[0, 0]
    # A shift of a quarter of the width is 3 pixels.
    assert divmod(int(shifted.argmax()), 12) in {(3, 11), (3, 5)}
    assert float(shifted.max()) == pytest.approx(1.0, abs=1e-4)


def test_row_ids_are_lazy_and_behave_like_a_list(tmp_path):
    from aelab.data import ImageRows, RowIds

    ids = RowIds(5)
    assert (
        len(ids) == 5
        and ids[3] == "3"
        and ids[-1] == "4"
        and list(ids) == ["0", "1", "2", "3", "4"]
    )
    assert (
        ids == ["0", "1", "2", "3", "4"]
        and ids[1:3] == ["1", "2"]
        and ids.take([4, 0]) == ["4", "0"]
    )
    assert ids != ["0"] and np.asarray(ids[2:], dtype=str).tolist() == ["2", "3", "4"]
    # An .npy source and its subsets and row views keep row numbers, not strings.
    a = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", a)
    ds = load_dataset(tmp_path / "x.npy")
    assert isinstance(ds.ids, RowIds) and ds.ids == [str(i) for i in range(6)]
    sub = ds.subset([5, 2])
    assert isinstance(sub.ids, RowIds) and sub.ids == ["5", "2"]
    rows = ImageRows(ds, [4, 1, 3])
    assert isinstance(rows.ids, RowIds) and list(rows.ids) == ["4", "1", "3"]
    assert rows.subset([2]).ids == ["3"]
