"""The latent-space workflow: embed, cluster maps, alpha sweeps, ratio search, deep clustering."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aelab.cli.main import app
from aelab.clustering.metrics import cluster_accuracy, clustering_scores
from aelab.clustering.space import fit_feature_space
from aelab.data import ImageDataset
from aelab.tasks import load_latents, run_cluster
from noise import near

runner = CliRunner()


def _shapes_ds(n: int = 180, seed: int = 0) -> ImageDataset:
    from conftest import make_shapes

    images, labels, names = make_shapes(n, seed=seed)
    return ImageDataset(
        images=torch.from_numpy(images)[:, None],
        labels=torch.from_numpy(labels),
        ids=[f"img{i:03d}" for i in range(n)],
        class_names=names,
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A convae_tiny pre-trained for two epochs on the shapes, and its data file."""
    from aelab.tasks import run_pretrain
    from conftest import make_shapes

    tmp = tmp_path_factory.mktemp("latent")
    images, labels, names = make_shapes(180)
    data = tmp / "shapes.npz"
    np.savez(data, images=images, labels=labels, class_names=np.array(names))
    run_pretrain(data, tmp, model="convae_tiny", epochs=2, batch_size=32, val_fraction=0.0,
                 device="cpu", progress=False)  # fmt: skip
    return tmp / "pretrain", data


def _blobs(sizes, dim=8, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres *= sep / np.linalg.norm(centres - centres.mean(0), axis=1, keepdims=True)
    y = np.repeat(np.arange(len(sizes)), sizes)
    return (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


# ----------------------------------------------------------------------------- embed


def test_embed_writes_latents_in_input_order(pretrained, tmp_path):
    from aelab.training import encode, load_model

    ckpt, data = pretrained
    out = tmp_path / "lat.npz"
    r = runner.invoke(app, ["embed", str(data), "--ckpt", str(ckpt), "--out", str(out),
                            "--batch-size", "7", "--device", "cpu"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "180 latent vectors of dimension 32" in r.output
    with np.load(out, allow_pickle=False) as f:
        z, ids, labels, names, index = f["z"], f["ids"], f["labels"], f["class_names"], f["index"]
    assert z.shape == (180, 32) and z.dtype == np.float32
    np.testing.assert_array_equal(index, np.arange(180))
    np.testing.assert_array_equal(labels, np.arange(180) % 3)
    assert ids.tolist() == [str(i) for i in range(180)] and names.tolist() == [
        "hbar",
        "vbar",
        "square",
    ]
    # row i is the latent of image i, whatever the batch size
    model, _ = load_model(ckpt)
    ref = encode(model, _shapes_ds(), batch_size=180, device="cpu")
    np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-5)


def test_embed_class_subset_in_a_ratio_is_seeded(pretrained, tmp_path):
    from aelab.training import encode, load_model

    ckpt, data = pretrained
    outs = []
    for i, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"sub{i}.npz"
        r = runner.invoke(app, ["embed", str(data), "--ckpt", str(ckpt), "--out", str(out),
                                "--classes", "2,0,1", "--ratio", "2:1:1", "--n", "40",
                                "--seed", str(seed), "--device", "cpu"])  # fmt: skip
        assert r.exit_code == 0, r.output
        outs.append(dict(np.load(out, allow_pickle=False)))
    a, b, c = outs
    assert "classes: square 20, hbar 10, vbar 10" in r.output
    assert a["z"].shape == (40, 32)
    # relabelled in the order given: square -> 0, hbar -> 1, vbar -> 2
    assert a["class_names"].tolist() == ["square", "hbar", "vbar"]
    assert np.bincount(a["labels"]).tolist() == [20, 10, 10]
    src_labels = np.arange(180) % 3
    np.testing.assert_array_equal(np.array([2, 0, 1])[a["labels"]], src_labels[a["index"]])
    assert (np.diff(a["index"]) > 0).all()  # source order
    np.testing.assert_array_equal(a["index"], b["index"])
    assert not np.array_equal(a["index"], c["index"])
    model, _ = load_model(ckpt)
    ref = encode(model, _shapes_ds().subset(a["index"]), device="cpu")
    np.testing.assert_allclose(a["z"], ref, rtol=1e-4, atol=1e-5)


def _embed(data, ckpt, out, *extra):
    r = runner.invoke(app, ["embed", str(data), "--ckpt", str(ckpt), "--out", str(out),
                            "--device", "cpu", *map(str, extra)])  # fmt: skip
    assert r.exit_code == 0, r.output
    return r


@pytest.mark.numerics
def test_embed_to_shards_matches_the_npz_and_clusters(pretrained, tmp_path):
    from aelab.data.shards import load_shards
    from aelab.training import encode, iter_encode, load_model

    ckpt, data = pretrained
    _embed(data, ckpt, tmp_path / "lat.npz", "--batch-size", "7")
    ref = dict(np.load(tmp_path / "lat.npz", allow_pickle=False))
    # Several shards and a remainder, with batches that straddle shard boundaries.
    r = _embed(data, ckpt, tmp_path / "shards", "--batch-size", "7", "--shard-size", "50")
    assert "shards/manifest.json (4 shards): 180 latent vectors" in r.output
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [50, 50, 50, 30]
    got = load_shards(tmp_path / "shards")
    # The same rows in the same order (ids below); the values agree to rounding: MKL's and
    # oneDNN's AVX2 kernels may round a batch differently with the buffer's alignment.
    near("shards", got["z"], ref["z"], "encode")
    assert got["ids"].tolist() == ref["ids"].tolist()
    np.testing.assert_array_equal(got["labels"], ref["labels"])
    assert got["class_names"] == ref["class_names"].tolist() == ["hbar", "vbar", "square"]

    # The same from a memory-mapped .npy read batch by batch, with a class subset.
    with np.load(data, allow_pickle=False) as f:
        np.save(tmp_path / "x.npy", f["images"])
        np.save(tmp_path / "y.npy", f["labels"])
    subset = ("--classes", "2,0", "--ratio", "3:1", "--n", "40", "--seed", "5")
    _embed(data, ckpt, tmp_path / "sub.npz", *subset)
    _embed(tmp_path / "x.npy", ckpt, tmp_path / "sub", "--labels", tmp_path / "y.npy",
           "--stream", "--shard-size", "16", *subset)  # fmt: skip
    sub_ref, sub = (
        dict(np.load(tmp_path / "sub.npz", allow_pickle=False)),
        load_shards(tmp_path / "sub"),
    )
    assert sub["ids"].tolist() == [str(i) for i in sub_ref["index"]] == sub_ref["ids"].tolist()
    np.testing.assert_array_equal(sub["labels"], sub_ref["labels"])
    assert np.bincount(sub["labels"]).tolist() == [30, 10]
    near("streamed", sub["z"], sub_ref["z"], "encode")

    # The generator behind both: (start, block) per batch, concatenating to encode().
    model, _ = load_model(ckpt)
    blocks = list(iter_encode(model, _shapes_ds(), batch_size=64, device="cpu"))
    assert [s for s, _ in blocks] == [0, 64, 128] and [len(z) for _, z in blocks] == [64, 64, 52]
    near("iter_encode", np.concatenate([z for _, z in blocks]),
         encode(model, _shapes_ds(), device="cpu"), "encode")  # fmt: skip

    r = runner.invoke(app, ["cluster", str(tmp_path / "shards"), "--k", "3", "--n-init", "2",
                            "--out", str(tmp_path / "clusters")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "180 samples x 32 features, k=3" in r.output
    assert "against the true classes" in r.output  # labels read from the shards
    rows = list(csv.reader((tmp_path / "clusters" / "labels.csv").open()))
    assert rows[0] == ["index", "cluster"] and len(rows) == 181
    assert {int(c) for _, c in rows[1:]} <= {0, 1, 2}


def test_cluster_refuses_an_interrupted_shard_write(pretrained, tmp_path):
    ckpt, data = pretrained
    out = tmp_path / "shards"
    _embed(data, ckpt, out, "--shard-size", "100")
    r = runner.invoke(app, ["embed", str(data), "--ckpt", str(ckpt), "--out", str(out)])
    assert r.exit_code == 2 and "add --overwrite" in r.output
    (out / "manifest.json").unlink()  # what a write cut short leaves
    r = runner.invoke(app, ["cluster", str(out), "--k", "3", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2
    assert "no manifest.json" in r.output and "interrupted" in r.output
    assert not (tmp_path / "c").exists()
    _embed(data, ckpt, out, "--shard-size", "100", "--overwrite")
    r = runner.invoke(app, ["cluster", str(out), "--k", "3", "--n-init", "1"])
    assert r.exit_code == 0, r.output


def test_embed_errors_are_one_line(pretrained, tmp_path):
    ckpt, data = pretrained
    r = runner.invoke(
        app, ["embed", str(data), "--ckpt", str(ckpt), "--out", str(tmp_path / "x.npy")]
    )
    assert r.exit_code == 2 and ".npz" in r.output
    r = runner.invoke(app, ["embed", str(data), "--ckpt", str(ckpt), "--out", str(tmp_path / "x.npz"),
                            "--ratio", "2:1:1"])  # fmt: skip
    assert r.exit_code == 2 and "--ratio needs --classes" in r.output
    assert not (tmp_path / "x.npz").exists()
    for args, msg in (
        (("--out", tmp_path / "x.npz", "--shard-size", "10"), "give --out a folder"),
        (("--out", tmp_path / "z", "--stream"), "an .npz archive is read into memory whole"),
        (("--out", tmp_path / "z", "--stream", "--skip-bad"), "--skip-bad needs the eager loader"),
    ):
        r = runner.invoke(app, ["embed", str(data), "--ckpt", str(ckpt), *map(str, args)])
        assert r.exit_code == 2 and msg in r.output, r.output
    np.save(tmp_path / "f.npy", np.zeros((4, 16, 16), np.float32))
    r = runner.invoke(app, ["embed", str(tmp_path / "f.npy"), "--ckpt", str(ckpt), "--out",
                            str(tmp_path / "z"), "--stream"])  # fmt: skip
    assert r.exit_code == 2 and "uint8" in r.output
    assert not (tmp_path / "z").exists()


# ----------------------------------------------------------------------------- feature files


def test_load_latents_reads_z_and_labels(tmp_path):
    X, y = _blobs([5, 5])
    path = tmp_path / "l.npz"
    np.savez(path, ids=np.array([f"a{i}" for i in range(10)]), z=X, labels=y, y2=y[::-1].copy(),
             class_names=np.array(["p", "q"]))  # fmt: skip
    lat = load_latents(path)
    np.testing.assert_array_equal(lat.X, X)
    np.testing.assert_array_equal(lat.labels, y)
    assert lat.class_names == ["p", "q"] and lat.ids[0] == "a0" and lat.key == "z"
    np.testing.assert_array_equal(load_latents(path, labels_key="y2").labels, y[::-1])
    assert load_latents(path, labels_key="none").labels is None
    with pytest.raises(ValueError, match="no array named 'nope'"):
        load_latents(path, labels_key="nope")
    with pytest.raises(ValueError, match=r"labels 'ids' must be non-negative integers"):
        load_latents(path, labels_key="ids")


def test_feature_spaces_numpy_and_torch_agree():
    X, _ = _blobs([30, 20], dim=6)
    X = np.abs(X)
    for kind in ("raw", "l2", "pca", "l2-pca"):
        fs = fit_feature_space(X, kind, n_components=3)
        a = fs.transform(X.astype(np.float64))
        b = fs.transform_torch(torch.from_numpy(X.astype(np.float64))).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        assert a.shape == (50, 3 if "pca" in kind else 6)
    np.testing.assert_allclose(
        np.linalg.norm(fit_feature_space(X, "l2").transform(X), axis=1), 1, rtol=1e-6
    )
    with pytest.raises(ValueError, match="unknown feature space"):
        fit_feature_space(X, "cosine")


def test_cluster_accuracy_hungarian():
    y = np.array([0, 0, 0, 1, 1, 2])
    assert cluster_accuracy(y, np.array([2, 2, 2, 0, 0, 1])) == 1.0  # a relabelling
    assert cluster_accuracy(y, np.array([1, 1, 0, 0, 0, 2])) == pytest.approx(5 / 6)
    assert cluster_accuracy(y, np.zeros(6, int)) == pytest.approx(3 / 6)
    s = clustering_scores(y, np.array([2, 2, 2, 0, 0, 1]))
    assert s == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})
    with pytest.raises(ValueError, match="equal length"):
        cluster_accuracy(y, y[:3])


# ----------------------------------------------------------------------------- maps, sweeps, ratio search


def test_map_places_centroids_with_their_clusters():
    from aelab import viz

    X, y = _blobs([40, 25, 25], dim=10, sep=10.0)
    C = np.stack([X[y == k].mean(0) for k in range(3)])
    for method in ("tsne", "pca"):
        emb, cent = viz.embed_2d(X, method=method, random_state=0, extra=C, n_iter=150)
        means = np.stack([emb[y == k].mean(0) for k in range(3)])
        nearest = np.argmin(((cent[:, None] - means[None]) ** 2).sum(-1), axis=1)
        assert nearest.tolist() == [0, 1, 2], method
        fig = viz.latent_map(X, y, C, true_labels=y, class_names=["a", "b", "c"], method=method,
                             random_state=0)  # fmt: skip
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        assert texts[:4] == [
            "cluster 0 (n=40)",
            "cluster 1 (n=25)",
            "cluster 2 (n=25)",
            "centroids",
        ]
        assert {"a", "b", "c"} <= set(texts)
        if method == "pca":  # deterministic: the drawn X markers are the placed centroids
            drawn = [c.get_offsets() for c in ax.collections if len(c.get_offsets()) == 3]
            np.testing.assert_allclose(drawn[-1], cent)


def test_sweep_panels_and_table_agree(tmp_path):
    X, y = _blobs([100, 50, 50], dim=8, sep=5.0)
    path = tmp_path / "lat.npz"
    np.savez(path, z=X, labels=y, class_names=np.array(["big", "s1", "s2"]))
    out, png = tmp_path / "out", tmp_path / "sweep.png"
    r = runner.invoke(app, ["cluster", str(path), "--k", "3", "--alpha-sweep", "0.1x,1x,10x,0.5",
                            "--plot", str(png), "--map", "pca", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 10_000
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [float(row["factor"]) for row in rows[:3]] == [0.1, 1.0, 10.0]
    assert float(rows[3]["alpha"]) == 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert float(rows[1]["alpha"]) == pytest.approx(summary["alpha"], rel=1e-5)
    assert rows[1]["sizes"] == ":".join(map(str, summary["sizes"]))
    for row in rows:
        assert sum(map(int, row["sizes"].split(":"))) == 200 and row["converged"] in (
            "True",
            "False",
        )
        assert 0 <= float(row["acc"]) <= 1 and -1 <= float(row["ari"]) <= 1
    # the same run through the library gives the table's rows as typed records
    res = run_cluster(path, k=3, sweep="0.1x,1x,10x,0.5", map="pca")
    assert [":".join(map(str, r.sizes)) for r in res.sweep] == [row["sizes"] for row in rows]
    assert [r.alpha for r in res.sweep] == pytest.approx([float(row["alpha"]) for row in rows])


def test_target_ratio_finds_the_ratio(tmp_path):
    # Overlapping blobs 200:100:100: hard k-means (large alpha) splits the big one.
    X, y = _blobs([200, 100, 100], dim=2, sep=3.0, seed=1)
    path = tmp_path / "lat.npy"
    np.save(path, X)
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["cluster", str(path), "--k", "3", "--target-ratio", "2:1:1", "--out", str(out)]
    )
    assert r.exit_code == 0, r.output
    s = json.loads((out / "summary.json").read_text())
    sizes = sorted(s["sizes"], reverse=True)
    target = np.array([200, 100, 100])
    assert np.all(np.abs(np.array(sizes) - target) <= 0.1 * target), sizes
    assert s["mismatch"] <= 0.1 and s["alpha_setting"] == "target-ratio"
    assert f"closest alpha {s['alpha']:.6g}" in r.output
    search = list(csv.DictReader((out / "search.csv").open()))
    assert len(search) == 25
    assert min(float(row["mismatch"]) for row in search) == pytest.approx(s["mismatch"], abs=1e-6)
    r = runner.invoke(
        app, ["cluster", str(path), "--k", "3", "--target-ratio", "2:1", "--out", str(out)]
    )
    assert r.exit_code == 2 and "2 parts for k=3" in r.output
    r = runner.invoke(
        app, ["cluster", str(path), "--k", "3", "--target-ratio", "2:1:1", "--alpha", "0.5"]
    )
    assert r.exit_code == 2 and "not both" in r.output


# ----------------------------------------------------------------------------- deep clustering


@pytest.mark.parametrize("method", ["ekm", "kmeans"])
def test_one_deep_clustering_epoch_lowers_its_loss(pretrained, method):
    from aelab.deepcluster import DeepClusterConfig, deep_cluster
    from aelab.training import load_model

    model, _ = load_model(pretrained[0])
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    ds = _shapes_ds()
    cfg = DeepClusterConfig(k=3, method=method, rounds=1, epochs_per_round=1, lr=1e-3,
                            batch_size=32, seed=0, device="cpu")  # fmt: skip
    res = deep_cluster(model, ds, cfg)
    (row,) = res.history
    assert np.isfinite(row["loss_before"]) and row["loss_after"] < row["loss_before"]
    assert row["cluster_after"] < row["cluster_before"]
    assert res.labels.shape == (180,) and sum(res.final["sizes"]) == 180
    assert res.centroids.shape == (3, 32) and 0 <= res.final["acc"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())


def test_clustering_loss_gradient_is_the_ekm_weighted_pull():
    from aelab.clustering import EquilibriumKMeans
    from aelab.deepcluster import clustering_loss

    rng = np.random.default_rng(0)
    Z, C, alpha = rng.normal(size=(6, 3)), rng.normal(size=(2, 3)), 0.7
    z = torch.tensor(Z, requires_grad=True)
    clustering_loss(z, torch.tensor(C), method="ekm", alpha=alpha).backward()
    ekm = EquilibriumKMeans(2, alpha=alpha, init=C, n_init=1, max_iter=1).fit(Z)
    ekm.cluster_centers_ = C  # weights at exactly these centroids
    W = ekm.equilibrium_weights(Z)  # (n, k)
    expected = 2 * (W[:, :, None] * (Z[:, None, :] - C[None])).sum(1) / len(Z)
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-5, atol=1e-8)
    # kmeans: the pull towards the nearest centroid only
    z = torch.tensor(Z, requires_grad=True)
    clustering_loss(z, torch.tensor(C), method="kmeans", alpha=1.0).backward()
    near = np.argmin(((Z[:, None] - C[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(z.grad.numpy(), 2 * (Z - C[near]) / len(Z), rtol=1e-6)
    # no NaN at extreme alphas
    for a in (1e-12, 1e12):
        assert torch.isfinite(
            clustering_loss(torch.tensor(Z), torch.tensor(C), method="ekm", alpha=a)
        )


def test_deepcluster_command_writes_a_usable_run(pretrained, tmp_path):
    ckpt, data = pretrained
    out = tmp_path / "dc"
    args = ["deepcluster", str(data), "--init", str(ckpt), "--k", "3", "--method", "ekm",
            "--rounds", "2", "--batch-size", "32", "--lr", "1e-3", "--alpha", "3x", "--out", str(out),
            "--device", "cpu"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    run = out / "deepcluster-ekm"
    assert {"model.safetensors", "model.json", "labels.csv", "centroids.npy", "rounds.csv",
            "summary.json"} <= {p.name for p in run.iterdir()}  # fmt: skip
    s = json.loads((run / "summary.json").read_text())
    assert len(s["rounds"]) == 2 and s["settings"]["method"] == "ekm" and s["space"]["kind"] == "l2"
    # alpha "3x": three times the automatic 2 / spread, re-derived each round
    for row in s["rounds"]:
        assert row["alpha"] == pytest.approx(6.0 / row["scale"])
    lines = (run / "labels.csv").read_text().splitlines()
    assert lines[0] == "id,cluster,label" and len(lines) == 181
    assert [int(x.split(",")[1]) for x in lines[1:]] == _sizes_to_labels(s["final"]["sizes"], lines)
    assert "round 2/2" in r.output and "initial ekm" in r.output
    # the fine-tuned encoder feeds `aelab embed`
    r2 = runner.invoke(
        app, ["embed", str(data), "--ckpt", str(run), "--out", str(tmp_path / "z.npz")]
    )
    assert r2.exit_code == 0, r2.output
    r3 = runner.invoke(app, args)
    assert r3.exit_code == 2 and "--overwrite" in r3.output
    r4 = runner.invoke(app, [*args[:-4], "--alpha", "hot", "--out", str(tmp_path / "x")])
    assert r4.exit_code == 2 and "such as '3x'" in r4.output


def _sizes_to_labels(sizes, lines):
    """The cluster column of labels.csv, checked against the summary's sizes on the way."""
    labels = [int(x.split(",")[1]) for x in lines[1:]]
    assert np.bincount(labels, minlength=len(sizes)).tolist() == sizes
    return labels
