"""EquilibriumKMeans on dask.array (threads and a two-process LocalCluster), shard folders."""

import json

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

from aelab.clustering import EquilibriumKMeans  # noqa: E402
from aelab.data.shards import ShardWriter, load_shards, read_shards, shard_files  # noqa: E402
from aelab.tasks import run_cluster  # noqa: E402


def blobs(seed: int = 0, offset: float = 0.0) -> np.ndarray:
    """Three imbalanced clusters in 6-D (600, 120, 40 points)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * 6, [5.0] * 6, [-5.0, 5.0] * 3])
    sizes = (600, 120, 40)
    X = np.concatenate([rng.normal(c, 1.0, (n, 6)) for c, n in zip(centres, sizes, strict=True)])
    return X + offset


@pytest.mark.parametrize("offset", [0.0, 100.0])  # 100: far from the origin, the shifted frame
def test_dask_fit_matches_in_memory(offset):
    X = blobs(offset=offset)
    init = X[[0, 600, 720]] + 0.5
    mem = EquilibriumKMeans(3, init=init).fit(X)
    dsk = EquilibriumKMeans(3, init=init).fit(da.from_array(X, chunks=170))
    np.testing.assert_allclose(dsk.cluster_centers_, mem.cluster_centers_, rtol=1e-5, atol=1e-5)
    assert dsk.objective_ == pytest.approx(mem.objective_, rel=1e-5)
    assert dsk.n_iter_ == mem.n_iter_ and dsk.alpha_ == pytest.approx(mem.alpha_, rel=1e-12)
    labels = dsk.labels_.compute()
    assert np.array_equal(labels, mem.labels_) and np.bincount(labels).tolist() == [600, 120, 40]
    pred = dsk.predict(da.from_array(X[::7], chunks=50))
    assert isinstance(pred, da.Array) and np.array_equal(pred.compute(), mem.predict(X[::7]))


def test_dask_sample_weight_and_kmeanspp():
    X = blobs(1)
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(X))
    init = X[[0, 600, 720]]
    mem = EquilibriumKMeans(3, init=init).fit(X, sample_weight=w)
    dsk = EquilibriumKMeans(3, init=init).fit(da.from_array(X, chunks=200), sample_weight=w)
    np.testing.assert_allclose(dsk.cluster_centers_, mem.cluster_centers_, rtol=1e-5, atol=1e-5)
    seeded = EquilibriumKMeans(3, n_init=3, random_state=0).fit(da.from_array(X, chunks=200))
    assert sorted(np.bincount(seeded.labels_.compute()).tolist()) == [40, 120, 600]
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = X.copy()
        bad[5, 2] = np.nan
        EquilibriumKMeans(3, init=init).fit(da.from_array(bad, chunks=200))
    with pytest.raises(ValueError, match="features"):
        mem.predict(da.from_array(X[:, :4], chunks=100))


def test_shards_round_trip(tmp_path):
    X = blobs(3).astype(np.float32)
    ids = [f"img{i}" for i in range(len(X))]
    with ShardWriter(tmp_path / "z", shard_size=300) as w:
        for s in range(0, len(X), 128):  # writes that straddle shard boundaries
            w.write(X[s : s + 128], ids=ids[s : s + 128], labels=np.arange(len(X))[s : s + 128] % 3)
    paths, rows, width, dtype = shard_files(tmp_path / "z")
    assert rows == [300, 300, 160] and width == 6 and dtype == np.float32
    Z = read_shards(tmp_path / "z")
    assert Z.chunks[0] == (300, 300, 160) and Z.dtype == np.float32
    np.testing.assert_array_equal(Z.compute(), X)
    got = load_shards(tmp_path / "z")
    assert got["ids"].tolist() == ids and got["labels"][:4].tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="already holds shards"):
        ShardWriter(tmp_path / "z")
    # An interrupted write leaves no manifest; the listed files are checked.
    (tmp_path / "z" / "z-00001.npy").unlink()
    with pytest.raises(ValueError, match="missing"):
        read_shards(tmp_path / "z")


def test_run_cluster_on_a_local_cluster_of_two_processes(tmp_path):
    distributed = pytest.importorskip("distributed")
    X = blobs(4)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, s in enumerate(range(0, len(X), 250)):
        np.save(shards / f"part{i}.npy", X[s : s + 250])  # plain shards, no manifest
    mem = run_cluster(X, k=3, seed=0, n_init=2)
    try:
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
    except Exception as e:  # pragma: no cover - sandboxes without sockets
        pytest.skip(f"cannot start a dask LocalCluster here: {e}")
    with cluster, distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        res = run_cluster(
            shards, tmp_path / "out", k=3, seed=0, n_init=2, scheduler=cluster.scheduler_address
        )
    assert res.chunks == 4 and res.n_samples == len(X)
    assert sorted(res.sizes) == [40, 120, 600]
    assert res.objective == pytest.approx(mem.objective, rel=1e-5)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["scheduler"] == cluster.scheduler_address
    assert (tmp_path / "out" / "labels.csv").read_text().count("\n") == len(X) + 1
    with pytest.raises(ValueError, match="folder of .npy shards"):
        run_cluster(shards / "part0.npy", k=3, scheduler="tcp://127.0.0.1:1")
