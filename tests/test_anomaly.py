"""ReconstructionDetector on tiny Fashion-MNIST subsets (convae_tiny, a few epochs)."""

import numpy as np
import pytest
import torch

from aelab.anomaly import ReconstructionDetector
from aelab.data import ImageDataset, from_array, load_dataset, select_classes

SNEAKER, TROUSER, BAG = 7, 1, 8


# Tiny models train fastest on one thread (conftest's one_torch_thread), for every test here.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fmnist() -> ImageDataset:
    # Train and test of the bundled subset: 400 images of each class.
    return load_dataset("fashion-mnist:all", progress=False)


@pytest.fixture(scope="module")
def sets(fmnist):
    normal = select_classes(fmnist, [SNEAKER], n=250, seed=0)
    rest = fmnist.subset(np.setdiff1d(np.arange(len(fmnist)), _rows(fmnist, normal)))
    held_out = select_classes(rest, [SNEAKER], n=150, seed=1)
    other = select_classes(rest, [TROUSER, BAG], n=150, seed=2)
    return normal, held_out, other


def _rows(full: ImageDataset, part: ImageDataset) -> np.ndarray:
    index = {i: r for r, i in enumerate(full.ids)}
    return np.array([index[i] for i in part.ids])


def _detector(**kw) -> ReconstructionDetector:
    base = dict(
        model="convae_tiny", epochs=5, min_steps=0, batch_size=32, lr=3e-3, device="cpu",
        calibration_fraction=0.2, verbose=False,
    )  # fmt: skip
    return ReconstructionDetector(**{**base, **kw})


@pytest.fixture(scope="module")
def fitted(sets):
    normal, _, _ = sets
    return _detector(score="mse+ssim+latent+transform", threshold="fpr:0.1").fit(normal)


def test_fitted_attributes(fitted, sets):
    normal, _, _ = sets
    n_cal = round(0.2 * len(normal))
    assert fitted.decision_scores_.shape == (len(normal) - n_cal,)
    assert fitted.calibration_scores_.shape == (n_cal,)
    assert set(np.unique(fitted.labels_)) <= {0, 1}
    assert fitted.n_calibration_ == n_cal and fitted.calibration_note() is None
    assert fitted.latent_bank_.shape == (len(normal) - n_cal, 32)
    assert set(fitted.score_stats_) == {"mse", "ssim", "latent", "transform"}
    assert fitted.model_.config.num_classes == 4  # the head tells four turns apart
    assert fitted.history_[-1]["val_transform_acc"] > 0.5  # well above chance (0.25)
    # About 10% of the calibration images lie above an fpr:0.1 threshold.
    assert (fitted.calibration_scores_ > fitted.threshold_).mean() <= 0.1


def test_every_score_higher_on_a_different_class(fitted, sets):
    _, held_out, other = sets
    n, a = fitted.score_components(held_out), fitted.score_components(other)
    for name in ("mse", "ssim", "latent", "transform"):
        assert a[name].mean() > n[name].mean(), name
    m = fitted.evaluate(held_out, other)
    assert m["roc_auc"] > 0.9
    assert m["mean_mse_anomalous"] > m["mean_mse_normal"]
    assert {"roc_auc_mse", "roc_auc_ssim", "roc_auc_latent", "roc_auc_transform"} <= set(m)
    mae = fitted.score_components(other, "mae")["mae"]
    assert mae.shape == (len(other),) and (mae > 0).all()


def test_threshold_hits_target_fpr_on_fresh_normals(fitted, sets):
    _, held_out, other = sets
    fpr = fitted.predict(held_out).mean()
    # 60 calibration images set the quantile; allow for their sampling error.
    assert 0.0 < fpr < 0.25
    assert fitted.predict(other).mean() > 0.5


def test_predict_proba_and_maps(fitted, sets):
    _, held_out, other = sets
    p = fitted.predict_proba(other)
    assert p.shape == (len(other), 2)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[:, 1].mean() > fitted.predict_proba(held_out)[:, 1].mean()
    recon, maps = fitted.score_maps(other.subset(np.arange(5)))
    assert recon.shape == (5, 1, 16, 16) and maps.shape == (5, 16, 16)
    assert 0.0 <= recon.min() and recon.max() <= 1.0 and (maps >= 0).all()


def test_arrays_and_datasets_score_alike(fitted, sets):
    _, held_out, _ = sets
    sub = held_out.subset(np.arange(8))
    arr = sub.images[:, 0].numpy()  # (8, 28, 28) uint8
    np.testing.assert_allclose(fitted.decision_function(arr), fitted.decision_function(sub))
    as_float = from_array(arr.astype(np.float32) / 255)
    np.testing.assert_allclose(
        fitted.decision_function(as_float), fitted.decision_function(sub), rtol=1e-5
    )


def test_save_load_gives_identical_scores(fitted, sets, tmp_path):
    _, held_out, other = sets
    fitted.save(tmp_path / "det")
    again = ReconstructionDetector.load(tmp_path / "det")
    assert again.threshold_ == fitted.threshold_
    assert again.score_stats_ == fitted.score_stats_
    for ds in (held_out, other):
        np.testing.assert_array_equal(again.decision_function(ds), fitted.decision_function(ds))
    np.testing.assert_array_equal(again.labels_, fitted.labels_)
    assert not list((tmp_path / "det").rglob("*.pkl"))


def test_contamination_threshold(sets):
    normal, _, _ = sets
    det = _detector(score="mae", contamination=0.1, epochs=2).fit(normal)
    assert det.threshold_rule_.kind == "contamination"
    # The training scores set it: the calibration set stays what calibration_fraction asked.
    assert det.calibration_plan_.n_needed == 0 and det.calibration_note() is None
    assert abs(det.labels_.mean() - 0.1) <= 0.02


def test_single_score_keeps_its_units(sets):
    normal, held_out, _ = sets
    det = _detector(score="mse", epochs=2).fit(normal)
    comps = det.score_components(held_out)
    np.testing.assert_allclose(det.decision_function(held_out), comps["mse"])
    with pytest.raises(ValueError, match="fit with 'latent'"):
        det.score_components(held_out, "latent")
    with pytest.raises(ValueError, match="fit with .transform."):
        det.score_components(held_out, "transform")


def test_reproducible_with_the_same_seed(sets):
    normal, held_out, _ = sets
    small = normal.subset(np.arange(60))
    a = _detector(epochs=1).fit(small).decision_function(held_out)
    b = _detector(epochs=1).fit(small).decision_function(held_out)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_bad_inputs_give_clear_errors(tmp_path, sets):
    normal, _, _ = sets
    empty = ImageDataset(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), None, [])
    with pytest.raises(ValueError, match="no images"):
        _detector().fit(empty)
    with pytest.raises(ValueError, match="at least 10 normal images"):
        _detector().fit(normal.subset(np.arange(5)))
    with pytest.raises(ValueError, match="unknown score"):
        _detector(score="mse+psnr").fit(normal)
    with pytest.raises(ValueError, match="twice"):
        _detector(score="mse+mse").fit(normal)
    with pytest.raises(ValueError, match="not fitted"):
        _detector().decision_function(normal)
    with pytest.raises(ValueError, match="expected an aelab ImageDataset"):
        _detector().fit([1, 2, 3])
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="not a detector folder"):
        ReconstructionDetector.load(tmp_path / "junk")
    (tmp_path / "junk" / "detector.json").write_text('{"kind": "something else"}')
    with pytest.raises(ValueError, match="does not describe"):
        ReconstructionDetector.load(tmp_path / "junk")


def test_from_array_validates():
    ds = from_array(np.zeros((3, 8, 8, 3), dtype=np.uint8), labels=["a", "b", "a"])
    assert ds.images.shape == (3, 3, 8, 8) and ds.class_names == ["a", "b"]
    assert ds.ids == ["0", "1", "2"]
    with pytest.raises(ValueError, match=r"float images must be in \[0, 1\]"):
        from_array(np.full((2, 8, 8), 3.0))
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        from_array(np.zeros((3, 8, 8), dtype=np.uint8), labels=[0, 1])
    with pytest.raises(ValueError, match="leading axis"):
        from_array(np.zeros((8, 8), dtype=np.uint8))


def test_default_detector_is_the_benchmarked_one():
    from aelab.anomaly import DEFAULT_SCORE, anomaly_model_spec
    from aelab.anomaly.detector import AUTO_MIN_IMAGES, AUTO_SCORES

    det = ReconstructionDetector()
    assert det.score == DEFAULT_SCORE == "auto" and det.transforms == "rotations"
    assert AUTO_SCORES == ("mse+latent+transform", "pixel") and AUTO_MIN_IMAGES == 150
    assert (det.epochs, det.min_steps, det.batch_size, det.calibration_fraction) == (
        8,
        600,
        64,
        0.1,
    )
    assert anomaly_model_spec(1, 28, 28) == (
        "convae_fmnist",
        {"widths": (32, 64, 128), "latent_dim": 64},
    )
    name, ov = anomaly_model_spec(3, 64, 64)
    assert name == "convae" and ov["widths"] == (16, 32, 64, 128) and ov["latent_dim"] == 64
    name, ov = anomaly_model_spec(1, 8, 8)
    assert ov["image_size"] == 16 and ov["in_channels"] == 1 and ov["widths"] == (32, 64, 128)


def test_min_steps_trains_a_small_set_longer(sets):
    normal, held_out, _ = sets
    small = normal.subset(np.arange(40))  # 32 train + 8 calibration images
    # fpr:0.2 needs 4 calibration images, so 8 stay 8 (fpr:0.05 would hold out 19).
    det = _detector(score="mse+transform", epochs=1, min_steps=10, batch_size=16,
                    threshold="fpr:0.2").fit(small)  # fmt: skip
    assert det.epochs_ == 5 and len(det.history_) == 5  # 2 steps per epoch
    codes = det.encode(held_out.subset(np.arange(7)))
    assert codes.shape == (7, 32) and codes.dtype == np.float32


def test_auto_score_is_pixel_knn_on_a_small_set_and_says_so(sets, tmp_path):
    normal, held_out, _ = sets
    det = _detector(epochs=1).fit(normal.subset(np.arange(40)))
    assert det.score == "auto" and det.score_parts_ == ("pixel",)
    assert det.score_note() == "pixel (auto: fewer than 150 normal images, 40 here)"
    assert det.model_.config.num_classes == 1  # no transformation head to train
    assert det.pixel_bank_.shape[0] == 40 and det.latent_bank_ is None
    # 20 % of 40 is 8, too few to place fpr:0.05 (19 needed): 19 held out, 21 trained on.
    assert det.n_calibration_ == 19 and len(det.decision_scores_) == 21
    assert det.calibration_plan_.n_requested == 8 and det.calibration_plan_.n_needed == 19
    assert "so 19 were held out" in det.calibration_note()
    # The conformal rank of 19 scores at 0.05 is 19: the largest calibration score.
    assert det.threshold_ == det.calibration_scores_.max()
    det.save(tmp_path / "det")
    again = ReconstructionDetector.load(tmp_path / "det")
    assert again.score_parts_ == ("pixel",) and again.calibration_plan_ == det.calibration_plan_
    assert again.score_note() == det.score_note()
    np.testing.assert_allclose(again.decision_function(held_out), det.decision_function(held_out))
    # From 150 normal images on, the full score; a score given is used as given.
    big = _detector(epochs=1).fit(normal.subset(np.arange(150)))
    assert big.score_parts_ == ("mse", "latent", "transform")
    assert big.score_note() == "mse+latent+transform (auto: 150 or more normal images, 150 here)"
    assert _detector(score="mse", epochs=1).fit(normal.subset(np.arange(40))).score_note() == "mse"


def test_pixel_score_is_knn_to_every_normal_image_and_survives_save_load(sets, tmp_path):
    from aelab.anomaly.fitting import split_calibration
    from aelab.data import conform

    normal, held_out, other = sets
    small = normal.subset(np.arange(40))
    det = _detector(score="mse+pixel", epochs=1, threshold="fpr:0.2").fit(small)
    c, size, _ = det.image_shape_
    # The bank is every normal image, the 8 held out included, one byte a pixel.
    assert det.pixel_bank_.shape == (40, c * size * size) and det.pixel_bank_.dtype == np.uint8
    assert det.latent_bank_ is None and set(det.score_stats_) == {"mse", "pixel"}

    def rows(ds):
        return conform(ds, image_size=size, channels=c).images.numpy().reshape(len(ds), -1) / 255

    bank, new = rows(small), rows(held_out.subset(np.arange(6)))
    dist = np.sqrt(((new[:, None] - bank[None]) ** 2).sum(-1))  # (6, 40)
    expected = np.sort(dist, axis=1)[:, :5].mean(axis=1)
    got = det.score_components(held_out.subset(np.arange(6)), "pixel")["pixel"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # A held-out normal image is scored without itself (its own distance 0 left out).
    loo = np.sort(np.sqrt(((bank[:, None] - bank[None]) ** 2).sum(-1)), axis=1)[:, 1:6].mean(1)
    _, cal_rows = split_calibration(40, det.n_calibration_, 0)
    mean, std = det.score_stats_["pixel"]
    assert mean == pytest.approx(loo[cal_rows].mean(), rel=1e-5)
    assert std == pytest.approx(loo[cal_rows].std(), rel=1e-4)
    det.save(tmp_path / "det")
    assert (tmp_path / "det" / "pixel_bank.npy").is_file()
    again = ReconstructionDetector.load(tmp_path / "det")
    np.testing.assert_array_equal(again.pixel_bank_, det.pixel_bank_)
    np.testing.assert_array_equal(again.decision_function(other), det.decision_function(other))
    only = _detector(score="pixel", epochs=1).fit(small)
    np.testing.assert_allclose(only.decision_function(held_out.subset(np.arange(6))), expected,
                               rtol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="pixel score needs the normal images"):
        _detector(score="mse", epochs=1).fit(small).score_components(held_out, "pixel")


def test_shift_transforms_train_a_wider_head(sets):
    normal, held_out, other = sets
    det = _detector(score="transform", transforms="rotations+shifts", epochs=3).fit(normal)
    assert det.model_.config.num_classes == 20
    assert det.history_[-1]["val_transform_acc"] > 0.2  # chance is 0.05
    s_n, s_a = det.decision_function(held_out), det.decision_function(other)
    assert s_a.mean() > s_n.mean()
    with pytest.raises(ValueError, match="unknown transforms"):
        _detector(transforms="mirror").fit(normal)


def test_loads_a_format_1_folder(fitted, sets, tmp_path):
    import json

    _, held_out, _ = sets
    fitted.save(tmp_path / "det")
    meta_path = tmp_path / "det" / "detector.json"
    meta = json.loads(meta_path.read_text())
    # What aelab wrote before the transform score had its name.
    meta["format"] = 1
    meta.pop("epochs_")
    meta.pop("calibration")  # recorded since the conformal threshold
    params = meta["params"]
    params["score"] = params["score"].replace("transform", "rotation")
    params["rotation_weight"] = params.pop("transform_weight")
    for key in ("transforms", "min_steps"):
        params.pop(key)
    meta["score_stats"]["rotation"] = meta["score_stats"].pop("transform")
    meta_path.write_text(json.dumps(meta))
    old = ReconstructionDetector.load(tmp_path / "det")
    assert old.score_parts_ == fitted.score_parts_ and old.transforms == "rotations"
    assert old.n_calibration_ == fitted.n_calibration_
    np.testing.assert_array_equal(
        old.decision_function(held_out), fitted.decision_function(held_out)
    )


def test_parameters_are_declared_once_and_checked():
    import inspect

    from sklearn.base import clone

    names = set(inspect.signature(ReconstructionDetector).parameters)
    assert set(ReconstructionDetector._parameter_constraints) == names
    det = _detector(k=3)
    copy = clone(det)
    assert copy.get_params() == det.get_params() and copy is not det
    for bad, word in [({"calibration_fraction": 0.95}, "calibration_fraction"),
                      ({"k": True}, "k must be a number"), ({"epochs": 0}, "epochs"),
                      ({"transform_weight": -1.0}, "transform_weight")]:  # fmt: skip
        with pytest.raises(ValueError, match=word):
            _detector(**bad)._validate()
