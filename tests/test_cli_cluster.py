"""Tests of ``aelab cluster``: the files it writes and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from aelab.cli.main import app
from aelab.clustering import make_paper_data
from aelab.tasks import load_features, run_cluster

runner = CliRunner()


@pytest.fixture(scope="module")
def data_a():
    return make_paper_data("A", random_state=0, standardize=True)


def test_cluster_writes_labels_centroids_summary(tmp_path, data_a):
    X, y = data_a
    src = tmp_path / "feats.npy"
    np.save(src, X.astype(np.float32))
    out = tmp_path / "out"
    res = runner.invoke(app, ["cluster", str(src), "--k", "3", "--set", "seed=0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [
        "aelab-output.json",
        "centroids.npy",
        "labels.csv",
        "summary.json",
    ]  # the record of the command that wrote the folder (issue 19)
    lines = (out / "labels.csv").read_text().splitlines()
    assert lines[0] == "index,cluster" and len(lines) == len(X) + 1
    labels = np.array([int(r.split(",")[1]) for r in lines[1:]])
    idx = np.array([int(r.split(",")[0]) for r in lines[1:]])
    np.testing.assert_array_equal(idx, np.arange(len(X)))
    C = np.load(out / "centroids.npy")
    assert C.shape == (3, 2) and C.dtype == np.float32
    s = json.loads((out / "summary.json").read_text())
    assert s["k"] == 3 and sum(s["sizes"]) == len(X) and s["converged"] is True
    assert s["alpha"] == pytest.approx(
        1.0, rel=1e-3
    )  # 2 / mean squared distance of z-scored 2-d data
    assert sorted(s["sizes"]) == sorted(np.bincount(labels).tolist())
    assert {"objective", "iterations", "inertia", "n_samples"} <= set(s)
    # the printed sizes: the small cluster of 50 is found
    assert "cluster 0:" in res.output and "iterations" in res.output
    assert min(s["sizes"]) in range(40, 61)


def test_cluster_csv_and_npz_inputs(tmp_path):
    X = np.vstack([np.zeros((5, 2)), np.ones((5, 2)) * 10]) + np.arange(10)[:, None] * 0.01
    csv = tmp_path / "f.csv"
    csv.write_text("a,b\n" + "\n".join(f"{u},{v}" for u, v in X))
    np.testing.assert_allclose(load_features(csv), X)
    npz = tmp_path / "f.npz"
    np.savez(npz, ids=np.arange(10.0)[:, None], z=X)
    np.testing.assert_allclose(load_features(npz, key="z"), X)
    assert load_features(npz).shape == (10, 1)  # the first array
    res = runner.invoke(app, ["cluster", str(npz), "--set", "key=z", "--k", "2", "--alpha", "0.5"])
    assert res.exit_code == 0, res.output
    assert "cluster 0: 5 (50.0%)" in res.output and "cluster 1: 5 (50.0%)" in res.output
    r = run_cluster(csv, k=2, alpha=0.5, seed=1)
    assert r.alpha == 0.5 and sorted(r.sizes) == [5, 5] and r.files == ()


def _bad_files(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    (tmp_path / "text.csv").write_text("a,b\n1,x\n")
    np.save(tmp_path / "vec.npy", np.arange(5.0))
    np.save(tmp_path / "obj.npy", np.array(["a", "b"]))
    nan = np.ones((6, 2))
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "x.txt").write_text("1,2\n")
    np.savez(tmp_path / "k.npz", a=np.ones((4, 2)))
    return {
        "junk.npy": ("not a .npy file", []),
        "junk.npz": ("cannot read it", []),
        "text.csv": ("not a numeric CSV", []),
        "vec.npy": ("expected 2 dimensions", []),
        "obj.npy": ("expected numbers", []),
        "nan.npy": ("1 NaN", []),
        "x.txt": ("unsupported feature file type", []),
        "missing.npy": ("no such file", []),
        "k.npz": ("no array named 'zz'", ["--set", "key=zz"]),
    }


def test_bad_inputs_exit_2_and_write_nothing(tmp_path):
    cases = _bad_files(tmp_path)
    for name, (msg, extra) in cases.items():
        out = tmp_path / f"out_{name}"
        res = runner.invoke(
            app, ["cluster", str(tmp_path / name), "--k", "2", "--out", str(out), *extra]
        )
        assert res.exit_code == 2, (name, res.output)
        assert msg in res.output, (name, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert not out.exists()


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--k", "50"], "larger than the number of samples"),
        (["--k", "2", "--alpha", "-1"], "is not valid; give 'auto', a positive number"),
        (["--k", "2", "--alpha", "abc"], "alpha 'abc' is not valid"),
        (["--k", "2", "--set", "update=bogus"], "choose one of damped, fixed-point"),
    ],
)
def test_bad_options_exit_2(tmp_path, args, msg):
    src = tmp_path / "f.npy"
    np.save(src, np.random.default_rng(0).normal(size=(20, 2)))
    out = tmp_path / "out"
    res = runner.invoke(app, ["cluster", str(src), *args, "--out", str(out)])
    assert res.exit_code == 2 and msg in res.output, res.output
    assert not out.exists()


def test_help_lists_cluster():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "cluster" in res.output


def test_sweep_alphas_scale_multiples_of_the_main_alpha():
    from aelab.tasks.cluster import sweep_alphas

    assert sweep_alphas("0.1x, 2 ,auto", 4.0) == pytest.approx([0.4, 2.0, 4.0])
    with pytest.raises(ValueError, match="separated by commas"):
        sweep_alphas("1x,,2x", 1.0)
    with pytest.raises(ValueError, match="'3y' is not valid"):
        sweep_alphas("1x,3y", 1.0)


def test_warnings_are_counted_by_fit_and_listed_in_a_file(tmp_path, data_a):
    X, _ = data_a
    out = tmp_path / "out"
    # One iteration never converges: every fit warns once.
    r = run_cluster(X, out, k=3, max_iter=1, sweep="0.5x,1x,2x", seed=0)
    assert r.n_fits == 4 and r.n_warnings == 4  # the main fit and three sweep alphas
    lines = (out / "warnings.txt").read_text().splitlines()
    assert len(lines) == r.n_warnings == len(r.warning_log)
    assert lines[0].startswith("the main fit: EquilibriumKMeans reached max_iter=1")
    assert all(w.startswith("the alpha sweep: ") for w in lines[1:])
    assert str(out / "warnings.txt") in json.loads((out / "summary.json").read_text())["files"]
    # A fit without warnings writes no such file.
    quiet = run_cluster(X, tmp_path / "quiet", k=3, seed=0)
    assert quiet.n_warnings == 0 and quiet.n_fits == 1
    assert not (tmp_path / "quiet" / "warnings.txt").exists()


def test_cli_prints_one_warning_and_the_count(tmp_path, data_a):
    X, _ = data_a
    src = tmp_path / "feats.npy"
    np.save(src, X.astype(np.float32))
    out = tmp_path / "out"
    r = runner.invoke(app, ["cluster", str(src), "--k", "3", "--alpha-sweep", "0.5x,1x,2x", "--out",
                            str(out), "--set", "max_iter=1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.count("warning: ") == 1
    assert f"(4 warning(s) in 4 fit(s); all in {out / 'warnings.txt'})" in r.output
