import base64
import io
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from aelab import viz
from aelab.models import create_model


def legend_texts(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def n_images(ax):
    return len(ax.get_images())


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x[:150].astype(np.float64), y[:150]


# ---------------------------------------------------------------- figure plumbing


def test_png_bytes_have_figsize_times_dpi():
    fig = Figure(figsize=(4, 3))
    fig.subplots().plot([0, 1], [1, 0])
    png = viz.figure_to_png_bytes(fig, dpi=50)
    assert Image.open(io.BytesIO(png)).size == (200, 150)
    uri = viz.figure_to_data_uri(fig, dpi=50)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_save_figure_atomic_and_by_suffix(tmp_path):
    fig = viz.score_histogram([1.0, 2.0, 3.0])
    out = viz.save_figure(fig, tmp_path / "sub" / "hist.png", dpi=40)
    assert out == tmp_path / "sub" / "hist.png"
    assert Image.open(out).size == (int(5.2 * 40), int(3.4 * 40))
    assert not fig.axes  # closed: released after saving
    viz.save_figure(viz.score_histogram([1.0, 2.0]), tmp_path / "hist.svg")
    assert (tmp_path / "hist.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(ValueError, match="end the file name"):
        viz.save_figure(viz.score_histogram([1.0]), tmp_path / "hist.nope")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["hist.png", "hist.svg"]
    with pytest.raises(ValueError, match="Figure"):
        viz.figure_to_png_bytes("not a figure")


def test_figures_are_pyplot_free_and_thread_safe():
    rng = np.random.default_rng(0)

    def render(i):
        fig = viz.cluster_map(rng.normal(size=(30, 2)), np.arange(30) % 3, title=str(i))
        assert fig.canvas.manager is None  # not registered with pyplot
        return viz.figure_to_png_bytes(fig, dpi=30)

    with ThreadPoolExecutor(2) as pool:
        pngs = list(pool.map(render, range(4)))
    assert all(Image.open(io.BytesIO(p)).size == (192, 144) for p in pngs)


# ---------------------------------------------------------------- images


def test_error_maps_mean_over_channels_any_layout():
    x = np.zeros((2, 3, 4, 5), dtype=np.float32)  # (N, C, H, W)
    r = np.zeros((2, 4, 5, 3), dtype=np.uint8)  # (N, H, W, C) uint8
    r[0, 1, 2, 0] = 255
    e = viz.error_maps(torch.from_numpy(x), r)
    assert e.shape == (2, 4, 5) and e.dtype == np.float32
    expected = np.zeros((2, 4, 5), dtype=np.float32)
    expected[0, 1, 2] = 1 / 3
    np.testing.assert_allclose(e, expected, atol=1e-7)
    with pytest.raises(ValueError, match="differ in shape"):
        viz.error_maps(x, x[:, :, :3])


def test_image_grid_rows_columns_and_cmaps():
    rng = np.random.default_rng(0)
    originals = rng.random((6, 3, 8, 8)).astype(np.float32)  # channels-first RGB
    recon = (rng.random((6, 8, 8, 3)) * 255).astype(np.uint8)  # channels-last uint8
    errors = viz.error_maps(originals, recon) * 7.0  # any range once it has a colormap
    fig = viz.image_grid(
        [originals, recon, errors[:3]],
        row_titles=["image", "reconstruction", "error"],
        col_titles=["a", "b"],
        row_cmaps=[None, None, "inferno"],
        max_cols=5,
    )
    axes = fig.axes
    assert len(axes) == 3 * 5
    assert [n_images(ax) for ax in axes] == [1] * 5 + [1] * 5 + [1] * 3 + [0] * 2
    assert axes[0].get_images()[0].get_array().shape == (8, 8, 3)
    heat = axes[10].get_images()[0]
    assert heat.get_cmap().name == "inferno"
    assert heat.get_clim() == pytest.approx((0.0, float(errors[:3].max())))
    assert axes[10].get_ylabel() == "error" and axes[1].get_title() == "b"
    gray = viz.image_grid([torch.rand(2, 1, 16, 16, requires_grad=True)], max_cols=8)
    assert len(gray.axes) == 2 and gray.axes[0].get_images()[0].get_clim() == (0.0, 1.0)


@pytest.mark.parametrize(
    "rows, kwargs, match",
    [
        ([np.zeros((8, 8))], {}, "batch of images"),
        ([np.zeros((2, 5, 8, 7))], {}, "channel axis"),
        ([np.zeros((1, 2, 1, 8, 8))], {}, "batch of images"),
        ([np.full((2, 8, 8), 2.0)], {}, r"\[0, 1\]"),
        ([np.zeros((2, 3, 8, 8))], {"row_cmaps": ["magma"]}, "one channel"),
        ([np.zeros((2, 8, 8))], {"row_titles": ["a", "b"]}, "one per row"),
        (np.zeros((2, 8, 8)), {}, "list of image batches"),
        ([], {}, "empty"),
        ([np.full((2, 8, 8), np.nan)], {}, "NaN"),
    ],
)
def test_image_grid_rejects_bad_input(rows, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.image_grid(rows, **kwargs)


# ---------------------------------------------------------------- curves


def test_training_curves_runs_splits_and_missing_keys():
    hist = {
        "augment": [
            {
                "epoch": e,
                "train_loss": 1 / e,
                "val_loss": 2 / e,
                "train_acc": 0.1 * e,
                "val_acc": 0.1 * e,
            }
            for e in (1, 2, 3)
        ],
        # no val_acc at all, and one epoch without val_loss
        "no augment": [
            {"epoch": 1, "train_loss": 1.0, "val_loss": 1.5, "train_acc": 0.2},
            {"epoch": 2, "train_loss": 0.5, "train_acc": 0.4},
        ],
    }
    fig = viz.training_curves(hist)
    loss_ax, acc_ax = fig.axes
    assert legend_texts(loss_ax) == [
        "augment train",
        "augment val",
        "no augment train",
        "no augment val",
    ]
    assert legend_texts(acc_ax) == ["augment train", "augment val", "no augment train"]
    lines = {line.get_label(): line for line in loss_ax.get_lines()}
    assert (
        lines["augment val"].get_linestyle() == "--"
        and lines["augment train"].get_linestyle() == "-"
    )
    assert (
        lines["augment train"].get_color()
        == lines["augment val"].get_color()
        != lines["no augment train"].get_color()
    )
    np.testing.assert_array_equal(lines["no augment val"].get_ydata(), [1.5, np.nan])
    np.testing.assert_array_equal(lines["augment val"].get_xdata(), [1, 2, 3])


def test_training_curves_simple_forms():
    columns = {"epoch": [1, 2, 3], "loss": [3.0, 2.0, 1.0]}  # one run, column form, bare metric
    fig = viz.training_curves(columns, metrics=("loss", "acc"))
    assert len(fig.axes) == 1 and legend_texts(fig.axes[0]) == ["loss"]
    fig = viz.training_curves([{"train_loss": 1.0}, {"train_loss": 0.5}], metrics=("loss",))
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), [1, 2])
    with pytest.raises(ValueError, match="no values for metrics"):
        viz.training_curves(columns, metrics=("acc",))
    with pytest.raises(ValueError, match="expected a number"):
        viz.training_curves([{"train_loss": "high"}])
    with pytest.raises(ValueError, match="different lengths"):
        viz.training_curves({"epoch": [1, 2], "loss": [1.0]})


def test_roc_auc_in_legend_matches_sklearn():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(80, dtype=int), np.ones(20, dtype=int)]
    s = np.r_[rng.normal(0, 1, 80), rng.normal(1.5, 1, 20)]
    fig = viz.roc_curve_plot(y, s, label="recon error")
    (text,) = legend_texts(fig.axes[0])
    auc = float(re.search(r"AUC = ([0-9.]+)", text).group(1))
    assert text.startswith("recon error") and auc == pytest.approx(roc_auc_score(y, s), abs=5e-4)
    fig = viz.roc_curve_plot({"a": (y, s), "b": (y, -s)})
    texts = legend_texts(fig.axes[0])
    assert len(texts) == 2 and texts[1] == f"b (AUC = {roc_auc_score(y, -s):.3f})"
    with pytest.raises(ValueError, match="both 0"):
        viz.roc_curve_plot(np.zeros(5), np.arange(5.0))
    with pytest.raises(ValueError, match="one score per sample"):
        viz.roc_curve_plot(y, s[:-1])
    with pytest.raises(ValueError, match="scores is missing"):
        viz.roc_curve_plot(y)


def test_score_histogram_threshold_and_log():
    fig = viz.score_histogram(
        np.arange(100.0), np.arange(50.0, 60.0), threshold=55.5, log=True, bins=20
    )
    ax = fig.axes[0]
    assert legend_texts(ax) == ["normal (n=100)", "anomalous (n=10)", "threshold = 55.5"]
    assert ax.get_yscale() == "log"
    assert len(ax.patches) == 40
    assert any(line.get_xdata()[0] == 55.5 for line in ax.get_lines())
    assert legend_texts(viz.score_histogram([1.0, 1.0], None).axes[0]) == ["normal (n=2)"]
    with pytest.raises(ValueError, match="NaN"):
        viz.score_histogram([1.0, np.nan])
    with pytest.raises(ValueError, match="empty"):
        viz.score_histogram([])


def test_confusion_matrix_cells():
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]])
    fig = viz.confusion_matrix_plot(cm, ["a", "b", "c"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [str(v) for v in cm.ravel()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    norm = viz.confusion_matrix_plot(cm, normalize=True).axes[0]
    assert norm.texts[1].get_text() == f"{1 / 6:.2f}"
    with pytest.raises(ValueError, match="square"):
        viz.confusion_matrix_plot(np.ones((2, 3)))
    with pytest.raises(ValueError, match="one per class"):
        viz.confusion_matrix_plot(cm, ["a", "b"])


# ---------------------------------------------------------------- embedding


def test_embed_tsne_shapes_determinism_and_centroids(digits):
    x, y = digits
    centroids = np.stack([x[y == k].mean(axis=0) for k in range(10)])
    emb, placed = viz.embed_2d(x, extra=centroids, random_state=0, n_iter=150)
    assert emb.shape == (150, 2) and placed.shape == (10, 2)
    again, placed2 = viz.embed_2d(x, extra=centroids, random_state=0, n_iter=150)
    np.testing.assert_array_equal(emb, again)
    np.testing.assert_array_equal(placed, placed2)
    alone, none = viz.embed_2d(x, random_state=0, n_iter=150)
    assert none is None
    np.testing.assert_array_equal(emb, alone)  # placing extra points never moves the map
    # Each class centroid lands among its own class: nearest class median is its own.
    medians = np.stack([np.median(emb[y == k], axis=0) for k in range(10)])
    nearest = np.linalg.norm(placed[:, None] - medians[None], axis=2).argmin(axis=1)
    assert (nearest == np.arange(10)).sum() >= 8
    other, _ = viz.embed_2d(x, random_state=1, n_iter=150)
    assert not np.allclose(emb, other)


def test_embed_small_n_pca_and_errors(digits):
    x, _ = digits
    emb, _ = viz.embed_2d(x[:8], n_iter=30, perplexity=30)  # perplexity lowered to 7/3
    assert emb.shape == (8, 2) and np.isfinite(emb).all()
    emb, placed = viz.embed_2d(x, method="pca", extra=x[:3])
    pca = PCA(2).fit(x)
    np.testing.assert_allclose(np.abs(emb), np.abs(pca.transform(x)), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(placed, emb[:3], atol=1e-8)
    with pytest.raises(ValueError, match="at least 5 samples"):
        viz.embed_2d(x[:3])
    with pytest.raises(ValueError, match="unknown method"):
        viz.embed_2d(x, method="mds")
    with pytest.raises(ValueError, match="features"):
        viz.embed_2d(x, extra=x[:2, :10], method="pca")
    with pytest.raises(ValueError, match="2-D array"):
        viz.embed_2d(x[0])


def test_embed_umap_missing_names_the_install(digits, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` raise ImportError
    with pytest.raises(ImportError, match=r"pip install umap-learn.*aelab\[umap\]") as info:
        viz.embed_2d(digits[0], method="umap")
    assert isinstance(info.value, ValueError)  # the CLI shows it as a one-line user error


# ---------------------------------------------------------------- cluster maps


def test_cluster_map_legend_sizes_centroids_and_classes():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(30, int), np.ones(12, int), np.full(5, 3)]  # cluster 2 is empty
    emb = rng.normal(size=(labels.size, 2)) + labels[:, None] * 5
    centroids = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 10.0], [15.0, 15.0]])
    fig = viz.cluster_map(emb, labels, centroids_emb=centroids, title="EKM")
    ax = fig.axes[0]
    assert legend_texts(ax) == [
        "cluster 0 (n=30)",
        "cluster 1 (n=12)",
        "cluster 2 (n=0)",
        "cluster 3 (n=5)",
        "centroids",
    ]
    offsets = [c.get_offsets() for c in ax.collections]
    assert any(o.shape == (4, 2) and np.allclose(o, centroids) for o in offsets)
    true = np.arange(labels.size) % 2
    fig = viz.cluster_map(emb, labels, true_labels=true, class_names=["cat", "dog"])
    texts = legend_texts(fig.axes[0])
    assert texts[-3:] == ["true class:", "cat", "dog"] and "centroids" not in texts
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == labels.size


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"emb": np.zeros((4, 3))}, r"\(n_samples, 2\)"),
        ({"labels": np.zeros(3, int)}, "one per point"),
        ({"labels": np.array([0, 1, -1, 0])}, "non-negative"),
        ({"labels": np.array([0.5, 1, 1, 0])}, "integers"),
        ({"centroids_emb": np.zeros((1, 2))}, "row k must be"),
        ({"true_labels": np.array([0, 2, 1, 0]), "class_names": ["a", "b"]}, "class_names has 2"),
    ],
)
def test_cluster_map_rejects_bad_input(kwargs, match):
    args = {"emb": np.zeros((4, 2)), "labels": np.array([0, 1, 1, 0])} | kwargs
    with pytest.raises(ValueError, match=match):
        viz.cluster_map(**args)


def test_cluster_panels_one_axes_per_panel():
    rng = np.random.default_rng(0)
    panels = []
    for i, alpha in enumerate((0.01, 0.1, 1.0, 10.0, 100.0)):
        labels = np.r_[np.zeros(10 + i, int), np.ones(20 - i, int)]
        panels.append(
            {
                "emb": rng.normal(size=(30, 2)),
                "labels": labels,
                "centroids_emb": np.zeros((2, 2)),
                "title": f"alpha = {alpha}",
            }
        )
    fig = viz.cluster_panels(panels, ncols=2, suptitle="sweep")
    assert len(fig.axes) == 5
    assert [ax.get_title() for ax in fig.axes][:2] == [
        "alpha = 0.01\nsizes: 10 20",
        "alpha = 0.1\nsizes: 11 19",
    ]
    assert all(ax.get_legend() is None for ax in fig.axes)
    fig = viz.cluster_panels(panels[:2], legend=True)
    assert legend_texts(fig.axes[1])[:2] == ["cluster 0 (n=11)", "cluster 1 (n=19)"]
    with pytest.raises(ValueError, match="unknown keys"):
        viz.cluster_panels([{**panels[0], "alpha": 1}])
    with pytest.raises(ValueError, match="panel 1: labels"):
        viz.cluster_panels([panels[0], {**panels[1], "labels": np.zeros(3, int)}])
    with pytest.raises(ValueError, match="non-empty list"):
        viz.cluster_panels([])


# ---------------------------------------------------------------- layer table


def test_layer_table_convae_tiny():
    torch.manual_seed(0)
    model = create_model("convae_tiny")  # training mode
    rows = viz.layer_table(model)
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    convs = [(r["name"], r["output_shape"], r["params"]) for r in rows if r["type"] == "Conv2d"]
    # Conv2d(k4, s2, p1): 1->8 channels on 16x16, then 8->16 on 8x8.
    assert convs == [
        ("encoder.0.0", (8, 8, 8), 8 * 1 * 16 + 8),
        ("encoder.1.0", (16, 4, 4), 16 * 8 * 16 + 16),
    ]
    by_name = {r["name"]: r for r in rows}
    assert by_name["encoder.3"]["output_shape"] == (32,)  # the latent
    assert by_name["decoder.5"] == {
        "name": "decoder.5",
        "type": "ConvTranspose2d",
        "output_shape": (1, 16, 16),
        "params": 8 * 1 * 16 + 1,
    }
    assert by_name["classifier.4"]["output_shape"] == (10,)
    assert {"encoder", "decoder", "classifier"} == {r["name"].split(".")[0] for r in rows}


def test_layer_table_plain_modules_and_errors():
    lin = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(lin, torch.nn.ReLU(), lin)  # one layer used twice
    rows = viz.layer_table(model, (4,))
    assert [r["name"] for r in rows] == ["0", "1", "0"]
    assert [r["params"] for r in rows] == [20, 0, 0]
    with pytest.raises(ValueError, match="input_shape is required"):
        viz.layer_table(model)
    with pytest.raises(ValueError, match="cannot run an input"):
        viz.layer_table(model, (5,))
    with pytest.raises(ValueError, match="positive integers"):
        viz.layer_table(model, (0,))
