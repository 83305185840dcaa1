"""Fingerprints: what produced a result (settings, data, inputs, code), and the training runs
that resume only from the same; settings checked against their dataclasses before any work."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from aelab.cli.main import app
from aelab.data import ImageDataset, ImageFolderStream, ImageRows
from aelab.training import PretrainConfig
from conftest import one_line_error as _one_line_error


def data_digest(data):
    # Imported here (and the fingerprint module in the tests), so that on a checkout
    # without them each test fails on its own.
    from aelab.data import data_digest

    return data_digest(data)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _images(n=24, seed=0, labels=True):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 255, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 3 if labels else None
    return ImageDataset(images, y, [f"i{k}" for k in range(n)], ["a", "b", "c"] if labels else None)


# ----------------------------------------------------------------------------- the parts


def test_data_digest_changes_with_any_pixel_label_id_or_name():
    ds = _images()
    same = _images()
    assert data_digest(ds) == data_digest(same)
    pixel = _images()
    pixel.images[3, 0, 4, 4] ^= 1
    relabelled = _images()
    relabelled.labels[0] = 2
    renamed = ImageDataset(ds.images, ds.labels, [f"j{k}" for k in range(24)], ds.class_names)
    other_names = ImageDataset(ds.images, ds.labels, ds.ids, ["x", "b", "c"])
    digests = {data_digest(d) for d in (ds, pixel, relabelled, renamed, other_names)}
    assert len(digests) == 5
    assert data_digest(ds.subset([0, 1])) != data_digest(ds.subset([1, 0]))
    rows = ImageRows(ds, [0, 2, 4])
    assert data_digest(rows) != data_digest(ImageRows(ds, [0, 2, 5]))
    assert data_digest(None) is None


def test_streamed_folders_are_stamped_by_size_and_time_not_read(tmp_path):
    from PIL import Image

    for k in range(2):
        (tmp_path / f"c{k}").mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(tmp_path / f"c{k}/{i}.png")
    before = data_digest(ImageFolderStream(tmp_path))
    assert data_digest(ImageFolderStream(tmp_path)) == before
    f = tmp_path / "c1" / "2.png"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # written again, same bytes
    assert data_digest(ImageFolderStream(tmp_path)) != before


def test_settings_leave_out_where_a_run_runs_and_what_it_prints():
    from aelab.fingerprint import flat_settings

    a = flat_settings(PretrainConfig(epochs=2, device="cpu", progress=False))
    b = flat_settings(PretrainConfig(epochs=2, device="auto", progress=True, log_every=3))
    assert a == b and "device" not in a and "epochs" in a
    assert flat_settings(PretrainConfig(epochs=3)) != b


def test_the_first_difference_in_words():
    from aelab.fingerprint import Fingerprint

    old = Fingerprint({"epochs": 2, "lr": 0.1}, {"training images": "d1"}, {"pretrain": "p"})
    assert old.change_from(old) is None
    assert Fingerprint({"epochs": 3, "lr": 0.2}, old.data, old.inputs).change_from(old) == (
        "epochs changed (2 -> 3)"
    )
    assert Fingerprint(old.settings, {"training images": "d2"}, old.inputs).change_from(old) == (
        "training images changed"
    )
    assert Fingerprint(old.settings, old.data, {}).change_from(old) == "pretrain removed"
    newer = Fingerprint(old.settings, old.data, old.inputs, code={"aelab": "9.9"})
    assert newer.change_from(old).startswith("code changed (aelab ")
    assert old.change_from(None).startswith("no fingerprint recorded")
    assert Fingerprint.from_json(json.loads(json.dumps(old.to_json()))) == old
    assert Fingerprint.from_json(old.to_json()).digest == old.digest


def test_code_version_from_this_checkout_and_without_git(monkeypatch):
    from aelab import __version__
    from aelab.fingerprint import code_version

    code = code_version.__wrapped__()
    assert code["aelab"] == __version__
    if "commit" in code:  # running from a git checkout (the test suite usually does)
        assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)
        assert code["dirty"] == ("edits" in code)  # a digest of the edits, when there are any
    monkeypatch.setenv("PATH", "")  # no git: the version alone, no error
    assert code_version.__wrapped__() == {"aelab": __version__}


# ----------------------------------------------------------------------------- training runs


def _pretrain(out, data, resume=False, **kw):
    from aelab.models import create_model
    from aelab.training import pretrain

    torch.manual_seed(0)
    cfg = PretrainConfig(**{"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False, **kw})
    return pretrain(create_model("convae_tiny"), data, config=cfg, out_dir=out, resume=resume)


def test_a_run_resumes_only_from_what_it_started_with(tmp_path, monkeypatch):
    data = _images(labels=False)
    _pretrain(tmp_path, data)
    recorded = json.loads((tmp_path / "config.json").read_text())["fingerprint"]
    assert recorded["settings"]["epochs"] == 1 and "device" not in recorded["settings"]
    assert recorded["data"]["training images"] == data_digest(data)
    # Where it runs and what it prints may change.
    _pretrain(tmp_path, data, resume=True, device="auto", progress=True)
    # Epochs (the schedule spans them), other images of the same count, other code: refused.
    with pytest.raises(ValueError, match=r"cannot resume, epochs changed \(1 -> 2\);.*--overwrite"):
        _pretrain(tmp_path, data, resume=True, epochs=2)
    with pytest.raises(ValueError, match="cannot resume, training images changed"):
        _pretrain(tmp_path, _images(seed=1, labels=False), resume=True)
    monkeypatch.setattr("aelab.fingerprint.code_version", lambda: {"aelab": "9.9"})
    with pytest.raises(ValueError, match=r"cannot resume, code changed \(aelab .* -> aelab 9.9\)"):
        _pretrain(tmp_path, data, resume=True)


def test_a_finetune_resumes_only_from_the_same_init_checkpoint(tmp_path):
    from aelab.tasks import run_finetune, run_pretrain

    data = _images(36)
    opts = {"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False, "min_epoch_steps": 0}
    for seed in (0, 1):
        run_pretrain(data, tmp_path / f"p{seed}", model="convae_tiny", epochs=1, batch_size=8,
                     device="cpu", progress=False, seed=seed)  # fmt: skip
    run_finetune(data, tmp_path, init=tmp_path / "p0" / "pretrain", recipe="plain", **opts)
    run_finetune(data, tmp_path, init=tmp_path / "p0" / "pretrain", recipe="plain", resume=True,
                 **opts)  # fmt: skip
    with pytest.raises(ValueError, match="cannot resume, --init checkpoint changed"):
        run_finetune(data, tmp_path, init=tmp_path / "p1" / "pretrain", recipe="plain",
                     resume=True, **opts)  # fmt: skip


# ----------------------------------------------------------------------------- nested settings


def test_model_overrides_are_checked_against_the_model_config(tmp_path):
    """The issue's case: --set 'model_overrides={foo=1}' gave exit 1 and a traceback."""
    from conftest import make_shapes

    images, labels, names = make_shapes(30)
    np.savez(tmp_path / "d.npz", images=images, labels=labels, class_names=np.array(names))
    out = tmp_path / "R"
    base = ["pretrain", str(tmp_path / "d.npz"), "--out", str(out), "--model", "convae_tiny",
            "--epochs", "1", "--device", "cpu"]  # fmt: skip
    r = CliRunner().invoke(app, [*base, "--set", "model_overrides={foo=1}"])
    _one_line_error(r, "unknown setting 'model_overrides.foo'", "latent_dim")
    r = CliRunner().invoke(app, [*base, "--set", 'model_overrides={latent_dim="many"}'])
    _one_line_error(r, "model_overrides.latent_dim", "not an integer")
    r = CliRunner().invoke(app, ["anomaly", "fit", str(tmp_path / "d.npz"), "--out", str(out),
                                 "--set", "model_overrides={foo=1}"])  # fmt: skip
    _one_line_error(r, "model_overrides.foo")
    assert not out.exists()
