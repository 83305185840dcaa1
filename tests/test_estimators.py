"""The scikit-learn estimators for learning: same weights as the CLI, the estimator contract.

Tiny models (convae_tiny), one epoch, 16x16 shapes; every fit runs on one
torch thread. The module fixtures train each model once and the tests share them.
"""

from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.validation import check_is_fitted
from typer.testing import CliRunner

from aelab.cli.main import app
from aelab.data import load_dataset, split_indices
from aelab.estimators import AutoencoderTransformer, FewLabelClassifier
from aelab.training import load_model, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# The same short schedule on both sides: the estimator's prefixed settings and the CLI's flags.
AE = {"model": "convae_tiny", "device": "cpu", "epochs": 1, "pretrain__batch_size": 16}
CLF = {
    "model": "convae_tiny", "device": "cpu", "pretrain__epochs": 1, "pretrain__batch_size": 16,
    "finetune__epochs": 1, "finetune__batch_size": 8, "finetune__min_epoch_steps": 0,
}  # fmt: skip
CLI_COMMON = ["--device", "cpu", "--epochs", "1", "--set", "progress=false"]
CLI_PRETRAIN = ["--model", "convae_tiny", "--set", "batch_size=16", *CLI_COMMON]
CLI_FINETUNE = ["--set", "batch_size=8", "--set", "min_epoch_steps=0", *CLI_COMMON]
LABELS_PER_CLASS = 6

#: scikit-learn's checks run on these estimators as they are (no data, or only an unfitted call).
SKLEARN_CHECKS_RUN = (
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
    "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params", "check_get_params_invariance",
    "check_set_params", "check_mixin_order", "check_parameters_default_constructible",
    "check_estimators_unfitted", "check_transformers_unfitted",
)  # fmt: skip

_TABLE = "feeds a 2-D table (n_samples, n_features); these estimators take images (N, H, W[, C])"
_TIME = "trains several models on a 2-D table"
_TABLE_CHECKS = (
    "check_array_api_input", "check_complex_data", "check_dtype_object",
    "check_estimator_sparse_array", "check_estimator_sparse_matrix",
    "check_estimator_sparse_tag", "check_estimators_dtypes",
    "check_estimators_empty_data_messages", "check_estimators_nan_inf",
    "check_f_contiguous_array_estimator", "check_fit1d", "check_fit2d_1feature",
    "check_fit2d_1sample", "check_fit2d_predict1d", "check_n_features_in",
    "check_n_features_in_after_fitting", "check_positive_only_tag_during_fit",
    "check_transformer_data_not_an_array", "check_transformer_general",
    "check_transformer_n_iter", "check_transformer_preserve_dtypes",
    "check_classifier_data_not_an_array", "check_classifiers_classes",
    "check_classifiers_one_label", "check_classifiers_one_label_sample_weights",
    "check_classifiers_regression_target", "check_classifiers_train",
    "check_decision_proba_consistency", "check_estimators_partial_fit_n_features",
    "check_non_transformer_estimators_n_iter", "check_requires_y_none",
    "check_supervised_y_2d", "check_supervised_y_no_nan", "check_fit_score_takes_y",
)  # fmt: skip
#: scikit-learn's checks that do not apply, and why. Where the property makes sense for
#: images, a test of this file checks it on images (named in the reason).
SKLEARN_CHECKS_NOT_APPLICABLE = {
    **dict.fromkeys(_TABLE_CHECKS, _TABLE),
    "check_estimators_fit_returns_self": f"{_TABLE} (test_fit_keeps_the_contract_on_images)",
    "check_estimators_overwrite_params": f"{_TABLE} (test_fit_keeps_the_contract_on_images)",
    "check_dont_overwrite_parameters": f"{_TABLE} (test_fit_keeps_the_contract_on_images)",
    "check_dict_unchanged": f"{_TABLE} (test_fit_keeps_the_contract_on_images)",
    "check_readonly_memmap_input": f"{_TABLE} (test_fit_keeps_the_contract_on_images)",
    "check_methods_subset_invariance": f"{_TABLE} (test_fit_keeps_the_contract_on_images)",
    "check_methods_sample_order_invariance": f"{_TABLE} (test_fit_keeps_the_contract_on_images)",
    "check_fit_check_is_fitted": f"{_TABLE} (test_fit_keeps_the_contract_on_images)",
    "check_estimators_pickle": f"{_TABLE} (test_pickle_and_save_load_give_the_same_outputs)",
    "check_fit_idempotent": f"{_TIME} (test_fit_keeps_the_contract_on_images)",
    "check_pipeline_consistency": f"{_TIME}; test_pipeline_with_ekm_in_a_fresh_process fits one",
}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """120 images of 3 classes, as arrays and as the files the CLI reads."""
    from conftest import make_shapes

    d = tmp_path_factory.mktemp("shapes")
    X, y, names = make_shapes(120)
    np.save(d / "images.npy", X)
    np.savez(d / "shapes.npz", images=X, labels=y, class_names=np.array(names))
    ds = load_dataset(str(d / "shapes.npz"), progress=False)
    few, _, _ = split_indices(ds, labels_per_class=LABELS_PER_CLASS, val_fraction=0.0, seed=0)
    y_few = np.full(len(y), -1)
    y_few[few] = y[few]  # the labels `aelab finetune --labels-per-class 6 --val-fraction 0` keeps
    return {"dir": d, "X": X, "y": y, "y_few": y_few, "names": names}


def _cli(*args: str) -> None:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def cli_runs(shapes: dict) -> Path:
    """`aelab pretrain` on the images, then two `aelab finetune --init` runs from it."""
    d = shapes["dir"]
    out = d / "cli"
    _cli("pretrain", d / "images.npy", "--out", out, *CLI_PRETRAIN)
    init = ["--init", out / "pretrain", *CLI_FINETUNE]
    _cli("finetune", d / "shapes.npz", "--out", out, "--name", "few", *init,
         "--labels-per-class", LABELS_PER_CLASS, "--val-fraction", "0")  # fmt: skip
    _cli("finetune", d / "shapes.npz", "--out", out, "--name", "all", *init)
    return out


@pytest.fixture(scope="module")
def ae(shapes: dict) -> AutoencoderTransformer:
    return AutoencoderTransformer(**AE).fit(shapes["X"])


@pytest.fixture(scope="module")
def clf(shapes: dict) -> FewLabelClassifier:
    """Fitted with y == -1 for the unlabeled images; every labelled image trains."""
    est = FewLabelClassifier(**CLF, finetune__val_fraction=0.0)
    return est.fit(shapes["X"], shapes["y_few"])


# ----------------------------------------------------------------------------- the same as the CLI


def test_transformer_trains_the_weights_aelab_pretrain_trains(shapes, cli_runs, ae):
    cli_model, _ = load_model(cli_runs / "pretrain")
    ours, theirs = ae.model_.state_dict(), cli_model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert ae.model_name_ == "convae_tiny" and ae.image_shape_ == (1, 16, 16)
    assert len(ae.history_) == 1 and ae.history_[0]["val_loss"] > 0


def _cli_predictions(shapes: dict, run: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels from `aelab predict` (class indices) and the run's probabilities."""
    csv_path = run.parent / f"{run.name}.csv"
    _cli("predict", shapes["dir"] / "shapes.npz", "--ckpt", run, "--out", csv_path)
    with csv_path.open() as f:
        labels = np.array([shapes["names"].index(r["label"]) for r in csv.DictReader(f)])
    model, _ = load_model(run)
    return labels, predict(model, torch.from_numpy(shapes["X"][:, None]), device="cpu")[1]


def test_unlabeled_minus_one_matches_pretrain_then_finetune_init(shapes, cli_runs, clf):
    """y == -1 for the images the CLI leaves unlabeled: the same predictions, to the bit."""
    labels, probs = _cli_predictions(shapes, cli_runs / "few")
    assert np.array_equal(clf.predict(shapes["X"]), labels)
    assert np.array_equal(clf.predict_proba(shapes["X"]), probs.astype(np.float64))
    assert len(np.unique(labels)) > 1  # not a constant answer that any run would match
    assert clf.classes_.tolist() == [0, 1, 2]
    labelled = shapes["y_few"] != -1
    assert np.array_equal(clf.transduction_[labelled], shapes["y"][labelled])
    assert np.array_equal(clf.transduction_[~labelled], clf.predict(shapes["X"][~labelled]))
    assert clf.validation_index_.size == 0 and len(clf.pretrain_history_) == 1


def test_default_validation_matches_the_cli_and_init_skips_pretraining(shapes, cli_runs, ae):
    """All labels given, default validation: the CLI's held-out rows and predictions, from init."""
    est = FewLabelClassifier(ae, **CLF).fit(shapes["X"], shapes["y"])
    labels, probs = _cli_predictions(shapes, cli_runs / "all")
    assert np.array_equal(est.predict(shapes["X"]), labels)
    assert np.allclose(est.predict_proba(shapes["X"]), probs, atol=0)
    ds = load_dataset(str(shapes["dir"] / "shapes.npz"), progress=False)
    assert np.array_equal(est.validation_index_, split_indices(ds, seed=0)[2])
    assert est.pretrain_history_ == [] and est.best_epoch_ == 1


def test_an_unfitted_init_is_fitted_on_x_as_pretraining_would(shapes, clf):
    init = AutoencoderTransformer(**AE)
    est = FewLabelClassifier(init, **CLF, finetune__val_fraction=0.0)
    est.fit(shapes["X"], shapes["y_few"])
    assert not hasattr(init, "model_")  # a clone was fitted, the parameter left alone
    assert np.array_equal(est.predict_proba(shapes["X"]), clf.predict_proba(shapes["X"]))
    assert len(est.pretrain_history_) == 1


def test_validation_comes_from_the_labelled_images_by_the_cli_rule(shapes):
    from aelab.data import from_array
    from aelab.estimators._fewlabel import _encode_labels, _split
    from aelab.tasks import FinetuneOptions, finetune_options

    y = shapes["y"].copy()
    y[30:] = -1  # 10 labelled images per class
    classes, codes = _encode_labels(y, len(y))
    opts = finetune_options()
    assert opts.val_fraction == FinetuneOptions().val_fraction == 0.1  # the CLI's default
    s = _split(from_array(shapes["X"]), codes, ["0", "1", "2"], opts)
    assert len(s.val_index) == 3 and set(s.val_index) <= set(range(30))  # 10 % of each class
    assert sorted(y[s.val_index].tolist()) == [0, 1, 2]
    assert set(s.labeled_index) == set(range(30)) - set(s.val_index)
    assert np.array_equal(s.unlabeled_index, np.setdiff1d(np.arange(120), s.val_index))
    assert s.unlabeled.labels is None and s.labeled.num_classes == 3


# ----------------------------------------------------------------------------- in a pipeline


def test_pipeline_with_ekm_in_a_fresh_process():
    script = textwrap.dedent(
        """
        import sys, warnings
        import torch
        torch.set_num_threads(1)
        warnings.simplefilter("ignore")  # the bundled-subset notice
        from sklearn.pipeline import make_pipeline
        from aelab.clustering import EquilibriumKMeans
        from aelab.data import load_dataset
        from aelab.estimators import AutoencoderTransformer

        fmnist = load_dataset("fashion-mnist:train", progress=False)  # the bundled subset
        X = fmnist.images[:150, 0].numpy()  # (150, 28, 28) uint8
        ae = AutoencoderTransformer("convae_tiny", epochs=1, device="cpu")
        pipe = make_pipeline(ae, EquilibriumKMeans(3, random_state=0))
        labels = pipe.fit_predict(X)
        print(X.shape, labels.shape, sorted(set(labels.tolist())), pipe[0].image_shape_)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split("\n")[0] == "(150, 28, 28) (150,) [0, 1, 2] (1, 16, 16)"


def test_import_aelab_stays_light():
    code = "import sys, aelab, aelab.clustering, aelab.estimators; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False"


# ----------------------------------------------------------------------------- parameters


def test_part_settings_go_through_get_params_set_params_and_clone():
    est = FewLabelClassifier(finetune__lr=0.01, model__latent_dim=16)
    params = est.get_params()
    assert params["finetune__lr"] == 0.01 and params["model__latent_dim"] == 16
    assert est.set_params(pretrain__epochs=2, recipe="plain") is est
    twin = clone(est)
    assert twin.get_params() == est.get_params() and twin.pretrain__epochs == 2
    assert "pretrain__epochs=2" in repr(twin)
    with pytest.raises(ValueError, match="Invalid parameter 'optimizer'"):
        est.set_params(optimizer__lr=1.0)
    inner = AutoencoderTransformer(epochs=3, pretrain__lr=0.5)
    outer = FewLabelClassifier(inner)
    assert outer.get_params()["init__epochs"] == 3
    assert outer.get_params()["init__pretrain__lr"] == 0.5
    outer.set_params(init__pretrain__lr=0.1)
    assert inner.pretrain__lr == 0.1


def test_grid_search_reaches_part_settings(shapes):
    from sklearn.model_selection import GridSearchCV

    grid = {"pretrain__lr": [1e-3, 5e-3], "model__latent_dim": [8]}
    search = GridSearchCV(AutoencoderTransformer(**AE), grid, cv=2).fit(shapes["X"][:64])
    assert search.best_params_["pretrain__lr"] in (1e-3, 5e-3)
    assert search.best_estimator_.transform(shapes["X"][:3]).shape == (3, 8)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


@pytest.mark.parametrize(
    ("est", "error", "match"),
    [
        (AutoencoderTransformer(pretrain__epochs=2), ValueError, "pretrain__epochs.*set epochs"),
        (AutoencoderTransformer(pretrain__seed=1), ValueError, "set random_state"),
        (AutoencoderTransformer(pretrain__lrr=1.0), ValueError, "unknown setting 'pretrain__lrr'"),
        (AutoencoderTransformer(pretrain__lr=-1.0), ValueError, "lr must be > 0"),
        (AutoencoderTransformer(model__depth=3), ValueError, "model__depth is not a setting"),
        (AutoencoderTransformer(epoch=3), TypeError, "unexpected keyword arguments epoch"),
        (AutoencoderTransformer(epochs=0), ValueError, "'epochs' parameter"),
        (FewLabelClassifier(finetune__labels_per_class=5), ValueError, "the labels are y"),
        (FewLabelClassifier(finetune__threshold=2.0), ValueError, "threshold must be in"),
        (FewLabelClassifier(recipe="best"), ValueError, "unknown recipe 'best'"),
        (FewLabelClassifier(init="x"), ValueError, "'init' parameter"),
    ],
)
def test_settings_are_checked_when_fit_starts(shapes, est, error, match):
    y = shapes["y"] if isinstance(est, FewLabelClassifier) else None
    with pytest.raises(error, match=match):
        est.fit(shapes["X"][:8], None if y is None else y[:8])


def test_labels_are_checked(shapes):
    X, y = shapes["X"][:9], shapes["y"][:9]
    est = FewLabelClassifier(**CLF)
    for bad, match in [
        (np.full(9, -1), "no labelled image"),
        (np.where(y == 0, 0, -1), "one class"),
        (y[:5], "5 labels for 9 images"),
        (np.array(["a", "b", "c"] * 3), "object array"),
        (np.linspace(0, 1, 9), "Unknown label type"),
    ]:
        with pytest.raises(ValueError, match=match):
            est.fit(X, bad)
    with pytest.raises(ValueError, match="images of shape"):
        AutoencoderTransformer(**AE).fit(X.reshape(9, -1))


# ----------------------------------------------------------------------------- the estimator contract


def test_fit_keeps_the_contract_on_images(shapes, ae):
    """fit returns self, leaves the parameters alone, adds only ``x_`` attributes; and more."""
    X = shapes["X"]
    est = AutoencoderTransformer(**AE)
    with pytest.raises(NotFittedError):
        est.transform(X)
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    before = {k: v for k, v in vars(est).items()}
    X_read_only = X.copy()
    X_read_only.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: a read-only array is not writable
        assert est.fit(X_read_only) is est
    assert est.get_params() == AutoencoderTransformer(**AE).get_params()
    added = set(vars(est)) - set(before)
    assert added and all(k.endswith("_") and not k.startswith("_") for k in added)
    check_is_fitted(est)
    state = dict(vars(est))
    Z = est.transform(X)
    assert vars(est).keys() == state.keys() and all(vars(est)[k] is v for k, v in state.items())
    assert np.array_equal(Z, ae.transform(X))  # fitting again gives the same model
    assert Z.shape == (120, 32) and Z.dtype == np.float32
    # Order and subsets do not matter (up to float rounding: a batch of 7 takes other kernels).
    assert np.allclose(est.transform(X[::-1]), Z[::-1], rtol=1e-5, atol=1e-6)
    assert np.allclose(est.transform(X[:7]), Z[:7], rtol=1e-5, atol=1e-6)
    assert np.array_equal(est.transform(X.astype(np.float32) / 255), Z)  # floats in [0, 1]
    assert np.array_equal(est.transform(X[..., None]), Z)  # (N, H, W, 1)


def test_transformer_outputs(shapes, ae):
    X = shapes["X"][:10]
    Z = ae.transform(X)
    R = ae.inverse_transform(Z)
    assert R.shape == (10, 16, 16) and R.dtype == np.float32 and 0 <= R.min() <= R.max() <= 1
    err = ae.score_samples(X)
    by_hand = ((R - X / 255.0) ** 2).mean(axis=(1, 2))
    assert err.shape == (10,) and np.allclose(err, by_hand, rtol=1e-4, atol=1e-6)
    assert ae.score(X) == pytest.approx(-err.mean())
    assert ae.get_feature_names_out()[-1] == "autoencodertransformer31"
    with pytest.raises(ValueError, match=r"Z must have shape \(n_samples, 32\)"):
        ae.inverse_transform(Z[:, :5])


def test_pickle_and_save_load_give_the_same_outputs(shapes, ae, clf, tmp_path):
    X = shapes["X"]
    data = pickle.dumps(clf)
    assert b"ConvAutoencoder" not in data  # weights travel as safetensors bytes, not a module
    again = pickle.loads(data)
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.get_params() == clf.get_params()
    assert np.array_equal(pickle.loads(pickle.dumps(ae)).transform(X), ae.transform(X))

    loaded = FewLabelClassifier.load(clf.save(tmp_path / "clf"))
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    assert np.array_equal(loaded.transduction_, clf.transduction_)
    assert loaded.get_params() == clf.get_params() and loaded.history_ == clf.history_
    assert not list((tmp_path / "clf").rglob("*.pkl"))
    ae_loaded = AutoencoderTransformer.load(ae.save(tmp_path / "ae"))
    assert np.array_equal(ae_loaded.transform(X), ae.transform(X))
    assert ae_loaded.image_shape_ == ae.image_shape_
    with pytest.raises(ValueError, match="not a 'aelab.FewLabelClassifier'"):
        FewLabelClassifier.load(tmp_path / "ae")
    with pytest.raises(ValueError, match="holds no saved estimator"):
        AutoencoderTransformer.load(tmp_path)


def test_string_classes_and_a_frozen_init(shapes, ae):
    from sklearn.frozen import FrozenEstimator

    names = np.array(shapes["names"], dtype=object)
    y = names[shapes["y"]]
    y[shapes["y_few"] == -1] = -1
    est = FewLabelClassifier(FrozenEstimator(ae), **CLF).fit(shapes["X"], y)
    assert est.classes_.tolist() == sorted(shapes["names"])
    assert set(est.predict(shapes["X"][:20])) <= set(shapes["names"])
    assert set(est.transduction_) <= set(shapes["names"])
    assert clone(est).init.estimator is ae  # a frozen init stays fitted through clone


def _check_names(est) -> list[str]:
    """The checks scikit-learn would run on ``est`` if it took 2-D tables."""

    class As2D(type(est)):
        def __sklearn_tags__(self):
            tags = super().__sklearn_tags__()
            tags.input_tags.two_d_array = True
            return tags

    return [
        getattr(check, "func", check).__name__
        for _, check in estimator_checks.estimator_checks_generator(As2D(), legacy=True)
    ]


@pytest.mark.parametrize("est", [AutoencoderTransformer(), FewLabelClassifier()], ids=repr)
def test_sklearn_checks_that_apply(est):
    names = _check_names(est)
    unlisted = set(names) - set(SKLEARN_CHECKS_RUN) - set(SKLEARN_CHECKS_NOT_APPLICABLE)
    assert not unlisted, f"checks neither run nor listed as not applicable: {sorted(unlisted)}"
    ran = [n for n in SKLEARN_CHECKS_RUN if n in names]
    assert len(ran) >= 11
    for name in ran:
        getattr(estimator_checks, name)(type(est).__name__, est)
