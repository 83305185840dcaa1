"""Tests of aelab.clustering: Equilibrium K-Means estimators, kernels and data generators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from aelab.clustering import (
    AlphaMultiple,
    EquilibriumKMeans,
    MiniBatchEquilibriumKMeans,
    alpha_sweep,
    auto_alpha,
    make_imbalanced_blobs,
    make_paper_data,
    parse_alpha,
    resolve_alpha,
)
from aelab.clustering._ekm_kernels import _assign, _per_sample, _row_sq_norms, _sufficient_stats

LN3 = float(np.log(3.0))


def naive_ekm(X, C, alpha, sample_weight=None):
    """The paper's equations written directly (N x K x D broadcasting, log-sum-exp for U)."""
    d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1)  # (N, K)
    z = -alpha * d
    z -= z.max(axis=1, keepdims=True)
    U = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    J_n = (U * d).sum(axis=1)
    w = U * (1 - alpha * (d - J_n[:, None]))
    s = np.ones(len(X)) if sample_weight is None else sample_weight
    ws = w * s[:, None]
    return d, U, w, J_n, ws.T @ X, ws.sum(0), float(s @ J_n)


def fitted(C, alpha):
    """An estimator with given centroids, to test the per-sample methods on hand-made cases."""
    est = EquilibriumKMeans(len(C))
    est.cluster_centers_ = np.asarray(C, dtype=np.float64)
    est.alpha_ = alpha
    est.n_features_in_ = est.cluster_centers_.shape[1]
    return est


# ----------------------------------------------------------------------------- hand-computed


def test_weights_by_hand():
    # x = 0 with centroids 0 and 1, alpha = ln 9: U = (9/10, 1/10), J = 1/10,
    # w = (9/10 (1 + a/10), 1/10 (1 - 9a/10)); the second is negative (repulsion).
    a = float(np.log(9.0))
    est = fitted([[0.0], [1.0]], a)
    X = np.array([[0.0]])
    np.testing.assert_allclose(est.membership(X), [[0.9, 0.1]], rtol=1e-12)
    w = est.equilibrium_weights(X)
    np.testing.assert_allclose(w, [[0.9 * (1 + a / 10), 0.1 * (1 - 0.9 * a)]], rtol=1e-12)
    assert w[0, 1] < 0
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(est.transform(X), [[0.0, 1.0]], atol=1e-12)
    assert est.score(X) == pytest.approx(-0.1, rel=1e-12)


@pytest.mark.parametrize(
    "update, expected",
    [("fixed-point", 0.25 * (1 - 0.75 * LN3)), ("damped", 0.125 * (1 - 0.75 * LN3))],
)
def test_one_update_by_hand(update, expected):
    # X = {0, 1}, C = {0, 1}, alpha = ln 3: by symmetry sum_n w_0n = 1 and
    # sum_n w_0n x_n = 1/4 (1 - 3a/4), so the fixed point moves c_0 to 1/4 (1 - 3a/4).
    X = np.array([[0.0], [1.0]])
    est = EquilibriumKMeans(
        2,
        alpha=LN3,
        init=np.array([[0.0], [1.0]]),
        max_iter=2,
        tol=0.0,
        update=update,
        acceleration=None,
    )
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        est.fit(X)
    np.testing.assert_allclose(est.cluster_centers_.ravel(), [expected, 1 - expected], rtol=1e-12)
    assert est.n_iter_ == 2 and not est.converged_
    # objective_ is J at the returned centroids, checked against the equations
    assert est.objective_ == pytest.approx(naive_ekm(X, est.cluster_centers_, LN3)[6], rel=1e-12)


# ----------------------------------------------------------------------------- fast == naive


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("offset", [0.0, 50.0])
@pytest.mark.parametrize("read_only", [False, True])  # e.g. a memory map
def test_chunked_kernel_matches_naive(dtype, rtol, offset, read_only):
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(203, 5)) * 2 + offset).astype(dtype)
    X.flags.writeable = not read_only
    C = X[rng.choice(203, 4, replace=False)].astype(np.float64) + 0.3
    sw = rng.uniform(0.5, 2.0, size=203)
    alpha = 0.2
    _, _, _, _, S, W, J = naive_ekm(X.astype(np.float64), C, alpha, sw)
    shift = X.mean(axis=0) if offset else None
    x_sq = _row_sq_norms(X, shift)
    for chunk in (7, 64, None):  # several chunks -> several threads
        st_ = _sufficient_stats(X, C, alpha, x_sq=x_sq, sample_weight=sw, shift=shift, chunk=chunk)
        centred = S - (0.0 if shift is None else W[:, None] * shift)
        np.testing.assert_allclose(
            st_.weighted_sum, centred, rtol=rtol, atol=rtol * np.abs(centred).max()
        )
        np.testing.assert_allclose(st_.weight_total, W, rtol=rtol, atol=rtol * np.abs(W).max())
        assert st_.objective == pytest.approx(J, rel=rtol)


def test_per_sample_methods_match_naive():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(150, 3))
    C = rng.normal(size=(6, 3))
    d, U, w, J_n, *_ = naive_ekm(X, C, 0.7)
    est = fitted(C, 0.7)
    np.testing.assert_allclose(est.transform(X), d, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(est.membership(X), U, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(est.equilibrium_weights(X), w, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(est.predict(X), d.argmin(axis=1))
    assert est.score(X) == pytest.approx(-J_n.sum(), rel=1e-9)
    labels, dmin = _assign(X, C, chunk=16)
    np.testing.assert_array_equal(labels, d.argmin(axis=1))
    np.testing.assert_allclose(dmin, d.min(axis=1), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_per_sample(X, C, 0.7, "objective", chunk=16), J_n, rtol=1e-9)


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha", [1e-12, 1e-6, 1.0, 1e6, 1e30, 1e100, 1e300])
def test_extreme_alpha_is_finite(alpha, dtype):
    X, _ = make_blobs(120, 4, centers=3, random_state=0)
    X = X.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EquilibriumKMeans(3, alpha=alpha, n_init=2, max_iter=30, random_state=0).fit(X)
    assert np.isfinite(est.cluster_centers_).all()
    assert np.isfinite(est.objective_) and est.objective_ >= 0
    for m in (est.membership, est.equilibrium_weights, est.transform):
        out = m(X)
        assert out.dtype == dtype and np.isfinite(out).all()
    np.testing.assert_allclose(est.membership(X).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(est.equilibrium_weights(X).sum(1), 1.0, rtol=1e-4, atol=1e-4)
    if alpha >= 1e6:  # hard K-means limit: one-hot weights, objective == inertia
        np.testing.assert_allclose(est.membership(X).max(1), 1.0)
        assert est.objective_ == pytest.approx(est.inertia_, rel=1e-5)


def test_float32_stays_float32():
    X, _ = make_blobs(300, 6, centers=3, random_state=0)
    est = EquilibriumKMeans(3, n_init=1, random_state=0).fit(X.astype(np.float32))
    assert est.cluster_centers_.dtype == np.float32
    for m in (est.transform, est.membership, est.equilibrium_weights):
        assert m(X.astype(np.float32)).dtype == np.float32
    ref = EquilibriumKMeans(3, n_init=1, random_state=0).fit(X)
    np.testing.assert_allclose(est.cluster_centers_, ref.cluster_centers_, rtol=1e-3, atol=1e-3)


def test_data_far_from_origin():
    # ||x||^2 - 2 x.c + ||c||^2 cancels badly at 1e4 in float32 unless the data are centred.
    X, y = make_blobs(400, 3, centers=3, random_state=1)
    a = EquilibriumKMeans(3, n_init=3, random_state=0).fit(X)
    b = EquilibriumKMeans(3, n_init=3, random_state=0).fit((X + 1e4).astype(np.float32))
    np.testing.assert_allclose(b.cluster_centers_ - 1e4, a.cluster_centers_, atol=2e-2)
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_dead_centroid_is_relocated_with_a_warning():
    X, _ = make_blobs(200, 2, centers=2, cluster_std=0.5, random_state=0)
    init = np.vstack([X[:2], [[1e3, 1e3]]])  # the third centroid is far from every point
    est = EquilibriumKMeans(3, alpha=1.0, init=init, random_state=0)
    with pytest.warns(RuntimeWarning, match=r"centroid 2 \(total weight"):
        est.fit(X)
    assert np.isfinite(est.cluster_centers_).all()
    assert np.abs(est.cluster_centers_).max() < np.abs(X).max() + 1
    assert len(np.unique(est.labels_)) == 3


def test_period_two_cycle_is_detected():
    # 10 well-separated blobs in 32-d: the paper's rule alternates for ever (EKM.md trap 3).
    X, _ = make_blobs(2000, 32, centers=10, random_state=0)
    fp = EquilibriumKMeans(10, n_init=1, update="fixed-point", random_state=0)
    with pytest.warns(ConvergenceWarning, match="period-2 cycle"):
        fp.fit(X)
    assert not fp.converged_ and fp.n_iter_ < fp.max_iter  # stopped by the detector
    dm = EquilibriumKMeans(10, n_init=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        dm.fit(X)
    assert dm.converged_ and dm.n_iter_ < 30
    assert dm.objective_ < fp.objective_
    plain = EquilibriumKMeans(10, n_init=1, random_state=0, acceleration=None).fit(X)
    assert plain.converged_ and dm.n_iter_ <= plain.n_iter_
    assert dm.objective_ == pytest.approx(plain.objective_, rel=1e-5)


def test_max_iter_warns():
    X, _ = make_blobs(300, 4, centers=4, random_state=0)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        est = EquilibriumKMeans(4, n_init=1, max_iter=2, tol=0.0, random_state=0).fit(X)
    assert est.n_iter_ == 2 and not est.converged_


# ----------------------------------------------------------------------------- behaviour


def test_paper_data_a_finds_the_small_cluster():
    X, y = make_paper_data("A", random_state=0, standardize=True)
    est = EquilibriumKMeans(3, random_state=0).fit(X)
    assert adjusted_rand_score(y, est.labels_) > 0.95
    assert est.objective_ >= est.inertia_
    np.testing.assert_array_equal(est.labels_, est.predict(X))
    assert est.score(X) == pytest.approx(-est.objective_, rel=1e-9)


def test_minibatch_forgets_and_reaches_full_batch_quality():
    X, y = make_paper_data("A", random_state=1, standardize=True)
    est = MiniBatchEquilibriumKMeans(3, random_state=0).fit(X)
    assert adjusted_rand_score(y, est.labels_) > 0.9
    # partial_fit on a stream of shuffled batches from one good start
    rng = np.random.default_rng(0)
    pf = MiniBatchEquilibriumKMeans(3, init=est.cluster_centers_ + 0.3, alpha=est.alpha_)
    for _ in range(10):
        for idx in np.array_split(rng.permutation(len(X)), 9):
            pf.partial_fit(X[idx])
    assert pf.n_steps_ == 90
    assert adjusted_rand_score(y, pf.predict(X)) > 0.9


def test_random_state_kinds_and_determinism():
    X, _ = make_blobs(200, 3, centers=3, random_state=0)
    a = EquilibriumKMeans(3, n_init=2, random_state=np.random.default_rng(5)).fit(X)
    b = EquilibriumKMeans(3, n_init=2, random_state=np.random.default_rng(5)).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    c = EquilibriumKMeans(3, n_init=2, random_state=np.random.RandomState(5)).fit(X)
    assert np.isfinite(c.cluster_centers_).all()


def test_sample_weight_matches_repetition():
    X, _ = make_blobs(60, 2, centers=3, random_state=0)
    init = X[:3]
    rep = np.repeat(X, 2, axis=0)
    a = EquilibriumKMeans(3, init=init, tol=1e-10).fit(X, sample_weight=np.full(60, 2.0))
    b = EquilibriumKMeans(3, init=init, tol=1e-10).fit(rep)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, atol=1e-6)
    assert a.objective_ == pytest.approx(b.objective_, rel=1e-6)


@pytest.mark.parametrize("name", ["A", "B", "C", "D"])
def test_paper_data_shapes(name):
    X, y = make_paper_data(name, random_state=0)
    sizes = np.bincount(y)
    expected = {
        "A": [2000, 50, 200],
        "B": [2000, 50, 200],
        "C": [5000, 200],
        "D": [5000] + [50] * 8,
    }[name]
    assert sizes.tolist() == expected and X.shape == (sum(expected), 2)
    Xs, _ = make_paper_data(name, random_state=0, standardize=True)
    np.testing.assert_allclose(Xs.std(0), 1.0)
    with pytest.raises(ValueError, match="choose one of"):
        make_paper_data("E")


def test_imbalanced_blobs_spacing():
    X, y = make_imbalanced_blobs((2000, 100, 100), random_state=0)
    centres = np.array([X[y == k].mean(0) for k in range(3)])
    dists = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(3, 1)]
    np.testing.assert_allclose(dists, 4.0, atol=0.5)


# ----------------------------------------------------------------------------- input errors


@pytest.mark.parametrize("Est", [EquilibriumKMeans, MiniBatchEquilibriumKMeans])
def test_input_errors_say_which_and_how_many(Est):
    X = np.random.default_rng(0).normal(size=(20, 3))
    bad = X.copy()
    bad[2, 1] = np.nan
    bad[5, 0] = np.inf
    with pytest.raises(ValueError, match=r"1 NaN and 1 infinite \(inf\) values in 2 of 20 rows"):
        Est(2).fit(bad)
    with pytest.raises(ValueError, match=r"n_samples=2 should be >= n_clusters=3"):
        Est(3).fit(X[:2])
    with pytest.raises(ValueError, match="alpha"):
        Est(2, alpha=0.0).fit(X)
    with pytest.raises(ValueError, match="alpha"):
        Est(2, alpha=-1.0).fit(X)
    est = Est(2, n_init=1, random_state=0).fit(X)
    with pytest.raises(ValueError, match="X has 2 features, but .* is expecting 3 features"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="1 NaN"):
        est.transform(bad[:3])


# ----------------------------------------------------------------------------- alpha


def test_auto_alpha_by_hand():
    # mean (1, 0); squared distances to it 1 and 1 -> alpha = 2 / 1
    assert auto_alpha([[0.0, 0.0], [2.0, 0.0]]) == 2.0
    # weights 3:1 on x = 0 and x = 2: weighted mean 0.5, 3/4 * 0.25 + 1/4 * 2.25 = 0.75
    assert auto_alpha([[0.0], [2.0]], sample_weight=[3.0, 1.0]) == pytest.approx(2 / 0.75)
    assert auto_alpha(np.full((5, 3), 7.0)) == 1.0  # all points coincide
    X = np.random.default_rng(0).normal(size=(50, 4)) * 3 + 1e5  # far from the origin
    direct = 2 / np.mean(np.sum((X - X.mean(0)) ** 2, axis=1))
    assert auto_alpha(X) == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize("dtype, offset", [(np.float64, 0.0), (np.float32, 0.0), (np.float64, 1e4)])
@pytest.mark.parametrize("weighted", [False, True])
def test_auto_alpha_is_what_the_estimators_use(dtype, offset, weighted):
    X, _ = make_blobs(300, 5, centers=3, random_state=0)
    X = (X + offset).astype(dtype)
    sw = np.random.default_rng(1).uniform(0.5, 2.0, size=300) if weighted else None
    expected = auto_alpha(X, sample_weight=sw)
    for Est in (EquilibriumKMeans, MiniBatchEquilibriumKMeans):
        est = Est(3, n_init=1, max_iter=5, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, sample_weight=sw)
        assert est.alpha_ == expected  # the same function, not merely close
    assert resolve_alpha("auto", X, sw) == expected
    assert resolve_alpha("2.5x", X, sw) == 2.5 * expected
    assert resolve_alpha(0.3, None) == 0.3  # an absolute alpha does not read X


def test_auto_alpha_input_errors():
    with pytest.raises(ValueError, match="expected 2 dimensions"):
        auto_alpha(np.zeros(4))
    with pytest.raises(ValueError, match="1 NaN"):
        auto_alpha([[0.0], [np.nan]])
    with pytest.raises(ValueError, match="dtype"):
        auto_alpha(np.array([["a"], ["b"]]))
    with pytest.raises(ValueError, match="at least one sample"):
        auto_alpha(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="sample_weight"):
        auto_alpha([[0.0], [1.0]], sample_weight=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"sample_weight has shape \(3,\)"):
        auto_alpha([[0.0], [1.0]], sample_weight=[1.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "value, expected",
    [
        ("auto", "auto"),
        (" AUTO ", "auto"),
        ("0.05", 0.05),
        ("1e-3", 1e-3),
        (2, 2.0),
        (np.float32(0.5), 0.5),
        ("3x", AlphaMultiple(3.0)),
        (" 0.1X ", AlphaMultiple(0.1)),
        ("1x", AlphaMultiple(1.0)),
        (AlphaMultiple(2.0), AlphaMultiple(2.0)),
    ],
)
def test_parse_alpha(value, expected):
    got = parse_alpha(value)
    assert got == expected and type(got) is type(expected)
    assert parse_alpha(got) == got  # parsing twice is harmless


@pytest.mark.parametrize(
    "value",
    ["", "x", "0", "0x", "-1", "-2x", "nan", "inf", "3y", "autox", "1,2", True, None, [1.0]],
)
def test_parse_alpha_rejects(value):
    with pytest.raises(ValueError, match=r"alpha .* is not valid; give 'auto', a positive number"):
        parse_alpha(value)


def test_alpha_lists_and_sweeps_use_the_one_parser():
    assert str(AlphaMultiple(0.5)) == "0.5x"
    X, _ = make_blobs(120, 2, centers=2, random_state=0)
    rows = alpha_sweep(X, 2, ["auto", "2x", 0.5], random_state=0, n_init=1)
    base = auto_alpha(X)
    assert [r["alpha"] for r in rows] == [base, 2 * base, 0.5]


# ----------------------------------------------------------------------------- start-up


def test_import_is_light_and_fits_need_no_torch():
    # import aelab.clustering loads no scikit-learn, torch, Dask or other aelab package;
    # the estimators load on first access, and a fit still imports no torch.
    code = """
import json, sys
import aelab.clustering as c
def loaded():
    return sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in
                   ("sklearn", "scipy", "torch", "dask")}
                  | {m for m in sys.modules if m.startswith("aelab.")
                     and not m.startswith("aelab.clustering")})
out = {"import": loaded()}
import numpy as np
X = np.random.default_rng(0).normal(size=(200, 3))
est = c.EquilibriumKMeans(3, n_init=1, random_state=0).fit(X)
out["fit"] = loaded()
out["module"] = type(est).__module__
out["dir"] = "MiniBatchEquilibriumKMeans" in dir(c)
print(json.dumps(out))
"""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["import"] == []
    assert "sklearn" in out["fit"] and "torch" not in out["fit"] and "dask" not in out["fit"]
    assert not [m for m in out["fit"] if m.startswith("aelab.")]
    assert out["module"] == "aelab.clustering._ekm" and out["dir"]


# ----------------------------------------------------------------------------- properties


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 60),
    d=st.integers(1, 5),
    k=st.integers(1, 4),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    offset=st.sampled_from([0.0, 10.0, -1e4]),
    f32=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_and_scales(n, d, k, scale, offset, f32, seed):
    k = min(k, n)
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(n, d)) * scale + offset).astype(np.float32 if f32 else np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = EquilibriumKMeans(k, n_init=2, max_iter=50, random_state=seed).fit(X)
    assert est.cluster_centers_.shape == (k, d) and np.isfinite(est.cluster_centers_).all()
    assert est.labels_.shape == (n,) and est.labels_.min() >= 0 and est.labels_.max() < k
    assert (
        np.isfinite(est.objective_)
        and est.objective_ >= est.inertia_ * (1 - 1e-3) - 1e-6 * scale**2
    )
    U = est.membership(X)
    np.testing.assert_allclose(U.sum(1), 1.0, rtol=1e-4)
    assert np.isfinite(est.equilibrium_weights(X)).all()


# ----------------------------------------------------------------------------- the sklearn contract


_SEEDING = "k-means++ draws differ between weighted and repeated samples (as for scikit-learn's KMeans); test_sample_weight_matches_repetition checks it from a fixed start"


@parametrize_with_checks(
    [
        EquilibriumKMeans(n_init=2, max_iter=50),
        MiniBatchEquilibriumKMeans(n_init=2, max_iter=10, batch_size=10),
    ],
    expected_failed_checks=lambda est: {"check_sample_weight_equivalence_on_dense_data": _SEEDING},
)
def test_sklearn_contract(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        check(estimator)
