import numpy as np
import pytest
import torch

from aelab.anomaly.scores import check_score, error_maps, knn_distance, pixel_scores
from aelab.anomaly.thresholds import (
    ThresholdRule,
    detection_metrics,
    parse_threshold,
    threshold_from_scores,
)


def test_pixel_scores_hand_computed():
    x = torch.zeros(2, 1, 4, 4)
    r = x.clone()
    r[1] = 0.5
    assert torch.allclose(pixel_scores(x, r, "mse"), torch.tensor([0.0, 0.25]))
    assert torch.allclose(pixel_scores(x, r, "mae"), torch.tensor([0.0, 0.5]))
    assert error_maps(x, r).shape == (2, 4, 4)


def test_ssim_score_zero_for_identical_and_positive_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    noisy = (x + 0.3 * torch.randn(2, 3, 16, 16, generator=g)).clamp(0, 1)
    s_same = pixel_scores(x, x, "ssim")
    s_noisy = pixel_scores(x, noisy, "ssim")
    assert torch.all(s_same.abs() < 1e-4) and torch.all(s_noisy > 0.1)


def test_knn_distance_far_points_score_higher():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(200, 4))
    near = rng.normal(size=(10, 4))
    far = rng.normal(size=(10, 4)) + 10
    assert knn_distance(far, bank, 5).min() > knn_distance(near, bank, 5).max()
    self_d = knn_distance(bank, bank, 3, exclude_self=True)
    assert self_d.min() > 0


def test_parse_threshold():
    assert parse_threshold("fpr:0.05") == ThresholdRule("fpr", 0.05)
    assert parse_threshold("fpr:0.05", contamination=0.1) == ThresholdRule("contamination", 0.1)
    assert parse_threshold(0.3) == ThresholdRule("value", 0.3)
    for bad in ["fpr", "fpr:x", "fpr:1.5", "banana"]:
        with pytest.raises(ValueError):
            parse_threshold(bad)
    with pytest.raises(ValueError, match="contamination"):
        parse_threshold("fpr:0.05", contamination=0.7)


@pytest.mark.parametrize(
    "bad",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        float("nan"),
        float("inf"),
        "fpr:nan",
        "fpr:0",
        "fpr:1",
        "contamination:-0.1",
        "contamination:inf",
    ],
)
def test_parse_threshold_refuses_non_finite_and_out_of_range(bad):
    # A NaN threshold used to be accepted, and then the detector flagged nothing.
    with pytest.raises(ValueError, match="threshold") as err:
        parse_threshold(bad)
    assert "\n" not in str(err.value)


def test_threshold_hits_target_fpr():
    rng = np.random.default_rng(1)
    calib = rng.normal(size=5000)
    fresh = rng.normal(size=20000)
    thr = threshold_from_scores(
        ThresholdRule("fpr", 0.05), train_scores=calib[:10], calib_scores=calib
    )
    assert abs((fresh > thr).mean() - 0.05) < 0.01


def test_detection_metrics():
    m = detection_metrics(np.array([0.1, 0.2, 0.3]), np.array([0.9, 0.25]), threshold=0.22)
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["fpr"] == pytest.approx(1 / 3) and m["tpr"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="0 anomalous"):
        detection_metrics(np.array([0.1]), np.array([]), 0.5)


def test_unknown_score():
    with pytest.raises(ValueError, match="unknown score"):
        check_score("psnr")


def test_parse_score():
    from aelab.anomaly.scores import parse_score

    assert parse_score("mse") == ("mse",)
    assert parse_score("SSIM + latent") == ("ssim", "latent")
    for bad, msg in [("", "score must be"), ("mse+mse", "twice"), ("mse+psnr", "unknown score")]:
        with pytest.raises(ValueError, match=msg):
            parse_score(bad)


def test_combine_scores_standardises_on_normals():
    from aelab.anomaly.scores import combine_scores, score_stats

    normal = {"a": np.array([1.0, 3.0]), "b": np.array([10.0, 30.0]), "c": np.array([5.0, 5.0])}
    stats = score_stats(normal)
    assert stats == {"a": (2.0, 1.0), "b": (20.0, 10.0), "c": (5.0, 1.0)}
    new = {"a": np.array([4.0]), "b": np.array([0.0]), "c": np.array([6.0])}
    # (4-2)/1 + (0-20)/10 + (6-5)/1 = 2 - 2 + 1
    np.testing.assert_allclose(combine_scores(new, stats), [1.0])


def test_transform_scores_hand_computed():
    from aelab.anomaly.scores import transform_scores

    sure = torch.full((4, 1, 4), -1e4)
    for t in range(4):
        sure[t, 0, t] = 1e4  # right and certain about every turn
    flat = torch.zeros(4, 1, 4)  # no idea: cross-entropy log(4)
    s = transform_scores(torch.cat([sure, flat], dim=1))
    assert s.shape == (2,)
    assert s[0] == pytest.approx(0.0, abs=1e-6)
    assert s[1] == pytest.approx(np.log(4), rel=1e-6)


def test_rotate_each_matches_rot90():
    from aelab.anomaly.selfsup import rotate, rotate_each

    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    out = rotate_each(x, torch.tensor([1, 3]))
    assert torch.equal(out[0], torch.rot90(x[0], 1, (1, 2)))
    assert torch.equal(out[1], rotate(x[1:], 3)[0])
    assert torch.equal(rotate(rotate(x, 1), 3), x)


def test_rotation_is_an_alias_of_transform():
    from aelab.anomaly.scores import parse_score

    assert parse_score("mse+rotation") == ("mse", "transform")


def test_transform_shift_and_flip_hand_computed():
    from aelab.anomaly.selfsup import TRANSFORM_SETS, Transform, apply_each, apply_transform

    x = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)
    assert torch.equal(apply_transform(x, Transform()), x)
    # One step is 16 // 8 = 2 pixels: content moves down by 2, the top is reflected.
    down = apply_transform(x, Transform(dy=1))
    assert torch.equal(down[0, 0, 2:], x[0, 0, :-2])
    assert torch.equal(down[0, 0, 0], x[0, 0, 2]) and torch.equal(down[0, 0, 1], x[0, 0, 1])
    left = apply_transform(x, Transform(dx=-1))
    assert torch.equal(left[0, 0, :, :-2], x[0, 0, :, 2:])
    flipped = apply_transform(x, Transform(turns=1, flip=True))
    assert torch.equal(flipped, torch.rot90(torch.flip(x, dims=(3,)), 1, dims=(2, 3)))
    for name, ts in TRANSFORM_SETS.items():
        assert ts[0] == Transform(), name  # every set begins with the identity
        assert len(set(ts)) == len(ts), name
    ts = TRANSFORM_SETS["rotations+shifts"]
    xs = torch.cat([x, x])
    out = apply_each(xs, torch.tensor([5, 0]), ts)
    assert torch.equal(out[0], apply_transform(x, ts[5])[0]) and torch.equal(out[1], x[0])


def test_unknown_transforms():
    from aelab.anomaly.selfsup import check_transforms

    with pytest.raises(ValueError, match="rotations"):
        check_transforms("mirror")


def test_pca_reconstruction_finds_the_rank_and_flags_off_subspace_rows():
    from aelab.anomaly import PCAReconstruction

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(4, 40))
    normal = rng.normal(size=(400, 4)) @ basis + 0.01 * rng.normal(size=(400, 40))
    inside = rng.normal(size=(20, 4)) @ basis + 0.01 * rng.normal(size=(20, 40))
    outside = inside + 0.5 * rng.normal(size=(20, 40))
    pca = PCAReconstruction(candidates=(1, 2, 4, 8, 16)).fit(normal)
    assert pca.n_components_ == 4
    assert set(pca.log_likelihood_) == {1, 2, 4, 8, 16}
    assert pca.decision_function(outside).min() > pca.decision_function(inside).max()
    errs = pca.errors_by_count(inside)
    assert all((errs[n + 1] <= errs[n] + 1e-12).all() for n in range(1, 16))
    np.testing.assert_allclose(errs[4], pca.decision_function(inside))
    fixed = PCAReconstruction(n_components=2).fit(normal)
    assert fixed.n_components_ == 2 and fixed.log_likelihood_ == {}
    with pytest.raises(ValueError, match="not fitted"):
        PCAReconstruction().decision_function(inside)
    with pytest.raises(ValueError, match="n_components"):
        PCAReconstruction(n_components=0).fit(normal)
    with pytest.raises(ValueError, match="2-D"):
        PCAReconstruction().fit(normal[0])


def test_pca_gram_path_matches_covariance_path():
    from aelab.anomaly import PCAReconstruction

    rng = np.random.default_rng(1)
    wide = rng.normal(size=(30, 100))  # fewer rows than features: the Gram matrix path
    q = rng.normal(size=(5, 100))
    a = PCAReconstruction(n_components=5).fit(wide)
    # The same fit by an explicit SVD of the centred training rows.
    perm = np.random.default_rng(0).permutation(30)
    train = wide[perm[3:]]
    mu = train.mean(0)
    _, _, vt = np.linalg.svd(train - mu, full_matrices=False)
    r = (q - mu) - ((q - mu) @ vt[:5].T) @ vt[:5]
    np.testing.assert_allclose(a.decision_function(q), (r**2).mean(1), rtol=1e-6)


def test_knn_distance_detector():
    from aelab.anomaly import KNNDistance, flatten_images

    bank = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    det = KNNDistance(k=2).fit(bank)
    # From (0, 0): distances 0, 1, 2 -> mean of the two nearest = 0.5.
    np.testing.assert_allclose(det.decision_function([[0.0, 0.0]]), [0.5])
    with pytest.raises(ValueError, match="k must be"):
        KNNDistance(k=0).fit(bank)
    imgs = np.full((2, 1, 3, 3), 255, dtype=np.uint8)
    assert flatten_images(imgs).shape == (2, 9) and flatten_images(imgs).max() == 1.0


def test_conformal_quantile_hand_computed():
    from aelab.anomaly.thresholds import conformal_quantile, conformal_rank, min_calibration_size

    rng = np.random.default_rng(0)
    # Scores 10, 20, ..., 10 n in a random order: the k-th smallest is 10 k.
    ranked = {n: rng.permutation(np.arange(1, n + 1) * 10.0) for n in (9, 18, 19, 25, 99, 100)}
    # n = 19, rate 0.05: (19 + 1) * 0.95 = 19, the 19th smallest (the largest).
    assert conformal_rank(19, 0.05) == 19 and conformal_quantile(ranked[19], 0.05) == 190.0
    # n = 25 (the quick study): 26 * 0.95 = 24.7 -> 25th, the largest again.
    assert conformal_quantile(ranked[25], 0.05) == 250.0
    # n = 99: 100 * 0.95 = 95 -> 95th smallest; n = 100: 101 * 0.95 = 95.95 -> 96th.
    assert conformal_quantile(ranked[99], 0.05) == 950.0
    assert conformal_quantile(ranked[100], 0.05) == 960.0
    # n = 9, rate 0.1: 10 * 0.9 = 9 -> the 9th smallest.
    assert conformal_quantile(ranked[9], 0.1) == 90.0
    # n = 18, rate 0.05: 19 * 0.95 = 18.05 -> rank 19 > 18: no finite threshold.
    assert conformal_rank(18, 0.05) == 19 and conformal_quantile(ranked[18], 0.05) == np.inf
    # The fewest scores with a finite rank: ceil(1 / rate - 1).
    assert [min_calibration_size(r) for r in (0.05, 0.1, 0.01, 0.3, 0.5)] == [19, 9, 99, 3, 1]
    for rate in (0.05, 0.1, 0.01, 0.3, 0.07):
        n = min_calibration_size(rate)
        assert conformal_rank(n, rate) <= n and conformal_rank(n - 1, rate) > n - 1


def test_calibration_plan_grows_to_place_the_rate_within_half_the_images():
    from aelab.anomaly.thresholds import CalibrationPlan, calibration_note, plan_calibration

    fpr = ThresholdRule("fpr", 0.05)
    # 10 % of 160 is 16 < 19: grown to 19.
    plan = plan_calibration(160, 0.1, fpr)
    assert plan == CalibrationPlan(19, 16, 19) and plan.enlarged and plan.sufficient
    assert "so 19 were held out" in calibration_note(plan, fpr)
    # Enough already: unchanged, nothing to say.
    plan = plan_calibration(250, 0.1, fpr)
    assert plan == CalibrationPlan(25, 25, 19) and calibration_note(plan, fpr) is None
    # 30 images: at most half (15) are held out, still too few; the note says what it means.
    plan = plan_calibration(30, 0.1, fpr)
    assert plan == CalibrationPlan(15, 3, 19) and not plan.sufficient
    assert "largest calibration score" in calibration_note(plan, fpr)
    # A larger share asked for is kept; other rules need no calibration set.
    assert plan_calibration(30, 0.8, fpr).n_calibration == 24
    contamination = ThresholdRule("contamination", 0.1)
    assert plan_calibration(30, 0.1, contamination) == CalibrationPlan(3, 3, 0)


def test_fpr_threshold_is_conformal_and_falls_back_to_the_largest_score():
    calib = np.arange(1, 26) * 1.0  # 25 scores
    rule = ThresholdRule("fpr", 0.05)
    assert threshold_from_scores(rule, train_scores=calib, calib_scores=calib) == 25.0
    # 10 scores cannot place 0.05: the largest, the tightest finite threshold they give.
    few = calib[:10]
    assert threshold_from_scores(rule, train_scores=calib, calib_scores=few) == 10.0
    # The old "higher" quantile gave the 24th of 25 here: more than 5 % of normals flagged.
    assert np.quantile(calib, 0.95, method="higher") == 24.0


def test_pixel_knn_distance_hand_computed():
    from aelab.anomaly.scores import SCORES, flat_pixels, parse_score, pixel_knn_distance

    # Three 1x1x2 normal images; scaled to [0, 1] they are (0, 0), (1, 0) and (0, 1).
    images = torch.tensor([[0, 0], [255, 0], [0, 255]], dtype=torch.uint8).reshape(3, 1, 1, 2)
    bank = flat_pixels(images)
    assert bank.dtype == np.uint8 and bank.shape == (3, 2)
    query = np.array([[255, 255], [0, 0]], dtype=np.uint8)
    # From (1, 1): distances sqrt(2), 1, 1; from (0, 0): 0, 1, 1.
    np.testing.assert_allclose(pixel_knn_distance(query, bank, 2), [1.0, 0.5])
    np.testing.assert_allclose(
        pixel_knn_distance(query, bank, 3), [(2 + np.sqrt(2)) / 3, 2 / 3], rtol=1e-6
    )
    # Leave-one-out on the bank itself: (0, 0) has 1 and 1; (1, 0) and (0, 1) have 1 and sqrt(2).
    loo = pixel_knn_distance(bank, bank, 2, exclude_self=True)
    np.testing.assert_allclose(loo, [1.0, (1 + np.sqrt(2)) / 2, (1 + np.sqrt(2)) / 2], rtol=1e-6)
    assert loo.dtype == np.float64
    assert "pixel" in SCORES and parse_score("mse+pixel") == ("mse", "pixel")
