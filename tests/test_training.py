import csv
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from aelab.data import ImageDataset, data_digest
from aelab.models import create_model
from aelab.training import (
    FinetuneConfig,
    NonFiniteLossError,
    PretrainConfig,
    TrainConfig,
    Trainer,
    encode,
    evaluate,
    finetune,
    load_model,
    predict,
    pretrain,
    reconstruct,
    reconstruction_step,
)
from aelab.training.checkpoint import load_weights

SRC = Path(__file__).resolve().parents[1] / "src"


def squares(n: int, seed: int = 0) -> ImageDataset:
    """White squares of random size and place on black, 1x16x16."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    for i in range(n):
        s = int(torch.randint(4, 8, (1,), generator=g))
        r, c = torch.randint(0, 16 - s, (2,), generator=g).tolist()
        images[i, 0, r : r + s, c : c + s] = 255
    return ImageDataset(images, None, [f"sq{i}" for i in range(n)])


def bars(n: int, seed: int = 0) -> ImageDataset:
    """Two classes: a horizontal (0) or vertical (1) bar at a random place, 1x16x16."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    labels = torch.arange(n) % 2
    for i in range(n):
        pos = int(torch.randint(1, 13, (1,), generator=g))
        start = int(torch.randint(0, 6, (1,), generator=g))
        if labels[i] == 0:
            images[i, 0, pos : pos + 3, start : start + 10] = 255
        else:
            images[i, 0, start : start + 10, pos : pos + 3] = 255
    return ImageDataset(
        images, labels, [f"b{i}" for i in range(n)], class_names=["horizontal", "vertical"]
    )


def tiny(seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("convae_tiny", **overrides)


def quick(cls=PretrainConfig, **kw):
    base = dict(epochs=2, batch_size=16, lr=3e-3, device="cpu", progress=False)
    base.update(kw)
    return cls(**base)


def differing_keys(a: dict, b: dict, atol: float = 0.0) -> list[str]:
    """The keys of two state dicts whose tensors differ by more than ``atol`` (or that only
    one of them has): an empty list when the states are equal. Assert ``== []`` so that a
    failure names the keys."""
    only_one = sorted(set(a) ^ set(b))
    return only_one + [
        k
        for k in a
        if k in b and not torch.allclose(a[k].float().cpu(), b[k].float().cpu(), atol=atol, rtol=0)
    ]


def test_pretrain_lowers_reconstruction_loss(tmp_path):
    data, val = squares(64), squares(32, seed=1)
    model = tiny()
    before = torch.nn.functional.mse_loss(
        reconstruct(model, val, device="cpu"), val.images.float() / 255
    )
    res = pretrain(model, data, val=val, config=quick(epochs=8, lr=1e-2), out_dir=tmp_path / "run")
    after = torch.nn.functional.mse_loss(
        reconstruct(model, val, device="cpu"), val.images.float() / 255
    )
    losses = [h["train_loss"] for h in res.history]
    assert len(losses) == 8
    assert losses[-1] < 0.5 * losses[0]
    assert after < 0.5 * before
    assert res.monitor == "val_loss" and res.best_epoch is not None
    z = encode(model, val, device="cpu")
    assert z.shape == (32, 32) and z.dtype == np.float32


@pytest.mark.slow
def test_finetune_beats_chance_and_predict_has_one_row_per_image(tmp_path):
    train, val = bars(96, seed=0), bars(40, seed=1)
    model = tiny()
    cfg = quick(FinetuneConfig, epochs=8, encoder_lr_mult=1.0, label_smoothing=0.0)
    res = finetune(model, train, val=val, config=cfg, out_dir=tmp_path / "ft")
    assert res.monitor == "val_acc"
    assert model.config.num_classes == 2  # the head was reset to the data's classes
    labels, probs = predict(model, val, device="cpu")
    assert labels.shape == (40,) and probs.shape == (40, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    report = evaluate(model, val, device="cpu")
    assert report["accuracy"] >= 0.85, report
    assert report["confusion_matrix"].sum() == 40
    assert report["accuracy"] == pytest.approx(float((labels == val.labels.numpy()).mean()))
    assert report["per_class_accuracy"].shape == (2,)
    assert max(h["val_acc"] for h in res.history) == pytest.approx(res.best_metric)


def test_finetune_with_reconstruction_term_and_unlabeled_data():
    train, unl = bars(32), squares(40)
    model = tiny()
    cfg = quick(FinetuneConfig, epochs=1, recon_weight=0.5, freeze_encoder_epochs=1)
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    res = finetune(model, train, unlabeled=unl, config=cfg)
    row = res.history[0]
    assert {"train_loss", "train_ce", "train_recon", "train_acc"} <= set(row)
    assert row["train_loss"] == pytest.approx(row["train_ce"] + 0.5 * row["train_recon"], rel=1e-5)
    # Frozen for the only epoch: weights and batch-norm statistics untouched.
    assert differing_keys(before, model.encoder.state_dict()) == []
    assert all(p.requires_grad for p in model.encoder.parameters())


def test_checkpoint_round_trip(tmp_path):
    model = tiny()
    pretrain(model, squares(32), config=quick(epochs=1), out_dir=tmp_path / "run")
    loaded, meta = load_model(tmp_path / "run")
    assert meta["model"] == "convae" and meta["image_shape"] == [1, 16, 16]
    assert differing_keys(model.state_dict(), loaded.state_dict()) == []
    assert not loaded.training


def test_bf16_autocast_and_channels_last_train_on_cpu():
    model = tiny()
    res = pretrain(
        model, squares(32), config=quick(epochs=1, amp="bf16", channels_last=True, loss="bce")
    )
    assert np.isfinite(res.history[0]["train_loss"]) and "train_mse" in res.history[0]


def _resume_script(run_dir: Path, kill_at_epoch: int | None) -> str:
    """A training script; with ``kill_at_epoch`` it SIGKILLs itself when that epoch starts."""
    return "\n".join(
        [
            "import os, signal, torch",
            "from aelab.data import ImageDataset",
            "from aelab.models import create_model",
            "from aelab.training import PretrainConfig, pretrain",
            "import aelab.training.loop as loop",
            inspect.getsource(squares),
            textwrap.dedent(
                f"""
                kill = {kill_at_epoch!r}
                if kill is not None:
                    fire = loop.Trainer._fire
                    def killing_fire(self, event):
                        if event == "on_train_epoch_start" and self.epoch == kill:
                            os.kill(os.getpid(), signal.SIGKILL)
                        fire(self, event)
                    loop.Trainer._fire = killing_fire
                torch.manual_seed(123)
                model = create_model("convae_tiny", dropout=0.2)
                def augment(x):  # random flips: uses the global torch RNG, which resume restores
                    return torch.where(torch.rand(x.shape[0], 1, 1, 1) < 0.5, x.flip(-1), x)
                cfg = PretrainConfig(epochs=3, batch_size=16, lr=3e-3, device="cpu", progress=False)
                pretrain(model, squares(48), val=squares(16, 1), config=cfg,
                         out_dir={str(run_dir)!r}, augment=augment, resume={kill_at_epoch is None!r})
                """
            ),
        ]
    )


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    """Kill a real process after epoch 1 (SIGKILL), resume in a new one, compare with a straight run."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}

    def run(script: str) -> int:
        return subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path).returncode

    straight = tmp_path / "straight"
    assert run(_resume_script(straight, None)) == 0
    killed = tmp_path / "killed"
    assert run(_resume_script(killed, 1)) != 0
    state = json.loads((killed / "trainer_state.json").read_text())
    assert state["epoch"] == 1
    assert run(_resume_script(killed, None)) == 0
    for name in ("model.safetensors", "best.safetensors", "optimizer.safetensors"):
        a, _ = load_weights(straight / name)
        b, _ = load_weights(killed / name)
        assert differing_keys(a, b, atol=1e-6) == [], name
    rows_a = list(csv.DictReader(open(straight / "metrics.csv")))
    rows_b = list(csv.DictReader(open(killed / "metrics.csv")))
    assert [r["train_loss"] for r in rows_a] == [r["train_loss"] for r in rows_b]
    assert len(rows_a) == 3


def test_resume_in_process_with_fresh_objects(tmp_path):
    data = squares(48)
    cfg = quick(epochs=2, restore_best=False)
    straight = tiny(seed=1, dropout=0.2)
    pretrain(straight, data, config=cfg, out_dir=tmp_path / "a")

    class Crash(Exception):
        pass

    crashing = tiny(seed=1, dropout=0.2)
    step = reconstruction_step()
    calls = {"n": 0}

    def crash_in_epoch_two(model, batch, stage):
        calls["n"] += 1
        if calls["n"] > 3:  # 48 images / 16 = 3 steps per epoch
            raise Crash
        return step(model, batch, stage)

    from aelab.training import batch_factory

    factory = batch_factory(
        data, batch_size=16, shuffle=True, seed=0, device=torch.device("cpu"), labels=False
    )
    trainer = Trainer(
        crashing,
        crash_in_epoch_two,
        factory,
        config=cfg,
        run_dir=tmp_path / "b",
        model_name="convae",
        run_config={"task": "pretrain", "data": {"train": 48, "val": None}, "augment": False},
        data_digests={"training images": data_digest(data), "validation images": None},
    )
    with pytest.raises(Crash):
        trainer.fit()
    fresh = tiny(seed=99, dropout=0.2)  # different init: resume must overwrite everything
    pretrain(fresh, squares(48), config=cfg, out_dir=tmp_path / "b", resume=True)
    assert differing_keys(straight.state_dict(), fresh.state_dict(), atol=1e-6) == []


def test_existing_run_needs_resume_or_overwrite_and_same_settings(tmp_path):
    data = squares(32)
    pretrain(tiny(), data, config=quick(epochs=1), out_dir=tmp_path)
    # The message names the keyword and the command-line flag of each way out.
    with pytest.raises(
        ValueError, match=r"resume=True \(--resume\).*overwrite=True \(--overwrite\)"
    ):
        pretrain(tiny(), data, config=quick(epochs=1), out_dir=tmp_path)
    with pytest.raises(ValueError, match="lr"):
        pretrain(tiny(), data, config=quick(epochs=1, lr=1e-2), out_dir=tmp_path, resume=True)
    res = pretrain(tiny(), data, config=quick(epochs=1), out_dir=tmp_path, resume=True)
    assert len(res.history) == 1  # finished runs resume to nothing more
    res = pretrain(tiny(), data, config=quick(epochs=1, lr=1e-2), out_dir=tmp_path, overwrite=True)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["lr"] == 1e-2
    # A bare checkpoint (weights, no training state) is never cleared to make room for a run.
    (tmp_path / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        pretrain(tiny(), data, config=quick(epochs=1), out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"no trainer_state.json.*overwrite=True \(--overwrite\)"):
        pretrain(tiny(), data, config=quick(epochs=1), out_dir=tmp_path, resume=True)
    with pytest.warns(UserWarning, match="nothing to resume"):
        pretrain(tiny(), data, config=quick(epochs=1), out_dir=tmp_path / "new", resume=True)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed"
)
def test_tensorboard_without_the_package_warns_and_trains(tmp_path):
    with pytest.warns(UserWarning, match="pip install tensorboard"):
        res = pretrain(
            tiny(), squares(16), config=quick(epochs=1, tensorboard=True), out_dir=tmp_path
        )
    assert res.epochs_run == 1 and (tmp_path / "metrics.csv").is_file()


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    data = squares(32)
    step = reconstruction_step()
    calls = {"n": 0}

    def poisoned(model, batch, stage):
        out = step(model, batch, stage)
        if stage == "train":
            calls["n"] += 1
            if calls["n"] > 2:  # 2 steps per epoch: epoch 2 goes bad
                out["loss"] = out["loss"] * float("nan")
        return out

    from aelab.training import batch_factory

    factory = batch_factory(
        data, batch_size=16, shuffle=True, seed=0, device=torch.device("cpu"), labels=False
    )
    snapshot = {}
    trainer = Trainer(
        tiny(),
        poisoned,
        factory,
        config=TrainConfig(epochs=3, device="cpu", progress=False),
        run_dir=tmp_path,
        model_name="convae",
    )
    trainer.add_callback(
        "on_epoch_end",
        lambda t: snapshot.update({k: v.clone() for k, v in t.model.state_dict().items()}),
    )
    with pytest.raises(NonFiniteLossError, match=r"nan in epoch 2.*epoch 1\) is kept"):
        trainer.fit()
    assert json.loads((tmp_path / "trainer_state.json").read_text())["epoch"] == 1
    saved, _ = load_weights(tmp_path / "model.safetensors")
    assert differing_keys(saved, snapshot) == []
    assert len(list(csv.DictReader(open(tmp_path / "metrics.csv")))) == 1


def test_a_run_stopped_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    """A NaN loss or a read error in epoch 1 writes no file (no stray config.json); with
    overwrite, the run already in the folder stays whole and resumable."""
    data = squares(32)
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written"):
        pretrain(tiny(), data, config=quick(lr=float("inf")), out_dir=tmp_path / "nan")
    assert list(tmp_path.rglob("*")) == []

    from aelab.training import batch_factory

    batches = batch_factory(
        data, batch_size=16, shuffle=True, seed=0, device=torch.device("cpu"), labels=False
    )

    class Unreadable:  # a stream whose second batch cannot be read
        def __init__(self, epoch: int) -> None:
            self.batches = batches(epoch)

        def __len__(self) -> int:
            return len(self.batches)

        def __iter__(self):
            yield next(iter(self.batches))
            raise OSError("images/17.png: read error")

    trainer = Trainer(
        tiny(), reconstruction_step(), Unreadable,
        config=TrainConfig(epochs=1, device="cpu", progress=False),
        run_dir=tmp_path / "stream", model_name="convae_tiny",
    )  # fmt: skip
    with pytest.raises(OSError, match="read error"):
        trainer.fit()
    assert list(tmp_path.rglob("*")) == []

    kept = tmp_path / "kept"
    pretrain(tiny(), data, config=quick(epochs=1), out_dir=kept)
    before = {p.name: p.read_bytes() for p in kept.iterdir()}
    with pytest.raises(NonFiniteLossError):
        pretrain(tiny(), data, config=quick(epochs=1, lr=float("inf")), out_dir=kept,
                 overwrite=True)  # fmt: skip
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before
    res = pretrain(tiny(), data, config=quick(epochs=1), out_dir=kept, resume=True)
    assert res.epochs_run == 1


def test_not_a_checkpoint_is_a_value_error_naming_what_is_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"missing model\.json and model\.safetensors"):
        load_model(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        load_model(tmp_path / "nope")


def test_weights_of_another_architecture_are_refused(tmp_path):
    pretrain(tiny(), squares(32), config=quick(epochs=1), out_dir=tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["config"]["latent_dim"] = 48
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not fit the model"):
        load_model(tmp_path)


def test_metrics_csv_is_written_and_readable(tmp_path):
    train, val = bars(32), bars(16, seed=1)
    finetune(tiny(), train, val=val, config=quick(FinetuneConfig, epochs=2), out_dir=tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for col in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s"):
        assert all(np.isfinite(float(r[col])) for r in rows), col
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["task"] == "finetune" and config["config"]["epochs"] == 2


def test_early_stopping_stops_a_model_agnostic_loop():
    model = nn.Linear(3, 1)
    x = torch.ones(4, 3)

    def step(m, batch, stage):
        # A loss that cannot improve: constant value, but with a gradient path.
        return {"loss": m(batch).sum() * 0 + 1.0, "n": batch.shape[0]}

    trainer = Trainer(
        model,
        step,
        lambda epoch: [x, x],
        config=TrainConfig(epochs=10, patience=2, device="cpu", progress=False),
    )
    res = trainer.fit()
    assert res.stopped_early and res.epochs_run == 3
    assert res.best_epoch == 1 and res.monitor == "train_loss"


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp16")
    with pytest.raises(ValueError, match="no labels"):
        finetune(tiny(), squares(8), config=quick(FinetuneConfig))
    rgb = ImageDataset(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), None, list("abcd"))
    with pytest.raises(ValueError, match="3x16x16 but the model expects 1x16x16"):
        pretrain(tiny(), rgb, config=quick())
    with pytest.raises(ValueError, match="needs validation data"):
        pretrain(tiny(), squares(8), config=quick(monitor="val_loss"))


def test_ema_weights_are_the_running_average_and_what_the_run_keeps(tmp_path):
    """The model ends with the EMA of the raw weights after each step, computed here by hand."""
    data = squares(48)
    decay = 0.8
    model = tiny(seed=3)
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    seen: list[torch.Tensor] = []  # raw weights at the start of each step = after the step before
    step = reconstruction_step()

    def recording(m, batch, stage):
        if stage == "train":
            seen.append(m.encoder[0][0].weight.detach().clone())
        return step(m, batch, stage)

    from aelab.training import batch_factory

    factory = batch_factory(
        data, batch_size=16, shuffle=True, seed=0, device=torch.device("cpu"), labels=False
    )
    trainer = Trainer(
        model, recording, factory, config=quick(epochs=2, ema_decay=decay),
        run_dir=tmp_path, model_name="convae_tiny",
    )  # fmt: skip
    trainer.fit()
    raw, _ = load_weights(tmp_path / "train_weights.safetensors")
    saved, _ = load_weights(tmp_path / "model.safetensors")
    key = "encoder.0.0.weight"
    weights = [*seen[1:], raw[key]]  # after steps 1..T
    assert len(weights) == 6
    expected = init[key].clone()
    for t, w in enumerate(weights):
        d = min(decay, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * w
    torch.testing.assert_close(model.state_dict()[key], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(saved[key], expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(raw[key], expected)  # the average is not the raw weights
    # Batch-norm statistics are averaged too; step counters are copied.
    assert int(saved["encoder.0.1.num_batches_tracked"]) == 6


def test_ema_run_resumes_to_the_same_average(tmp_path):
    data, val = bars(48), bars(16, seed=1)
    cfg = quick(FinetuneConfig, epochs=3, ema_decay=0.9, restore_best=False)
    straight = tiny(seed=1)
    res = finetune(straight, data, val=val, config=cfg, out_dir=tmp_path / "a")
    assert all(np.isfinite(r["val_loss"]) for r in res.history)

    class Stop(Exception):
        pass

    import aelab.training.loop as loop

    fire = loop.Trainer._fire

    def stop_in_epoch_two(self, event):
        if event == "on_train_epoch_start" and self.epoch == 1:
            raise Stop
        fire(self, event)

    stopped = tiny(seed=1)
    loop.Trainer._fire = stop_in_epoch_two
    try:
        with pytest.raises(Stop):
            finetune(stopped, data, val=val, config=cfg, out_dir=tmp_path / "b")
    finally:
        loop.Trainer._fire = fire
    resumed = tiny(seed=7)
    finetune(resumed, data, val=val, config=cfg, out_dir=tmp_path / "b", resume=True)
    assert differing_keys(straight.state_dict(), resumed.state_dict(), atol=1e-6) == []
    for name in ("model.safetensors", "train_weights.safetensors"):
        a, _ = load_weights(tmp_path / "a" / name)
        b, _ = load_weights(tmp_path / "b" / name)
        assert differing_keys(a, b, atol=1e-6) == [], name
    # The validation metric of the last epoch is that of the averaged weights the model holds.
    assert evaluate(straight, val, device="cpu")["accuracy"] == pytest.approx(
        res.history[-1]["val_acc"]
    )


def test_ema_decay_is_checked():
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_mask_patches_hides_whole_squares_with_the_image_mean():
    from aelab.training.steps import mask_patches

    torch.manual_seed(0)
    x = torch.rand(8, 1, 16, 16)
    out = mask_patches(x, 0.5, 4)
    assert out.shape == x.shape
    changed = (out != x).float()
    # Every 4x4 square is either all hidden or all kept.
    blocks = changed.view(8, 1, 4, 4, 4, 4).mean(dim=(3, 5))
    assert set(blocks.unique().tolist()) <= {0.0, 1.0}
    assert 0.2 < float(blocks.mean()) < 0.8
    hidden = changed.bool()
    means = x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x)
    torch.testing.assert_close(out[hidden], means[hidden])
    assert torch.equal(mask_patches(x, 0.0, 4), x)


def test_masked_pretraining_learns_to_fill_in_and_is_checked(tmp_path):
    data, val = squares(64), squares(32, seed=1)
    model = tiny()
    res = pretrain(model, data, val=val, config=quick(epochs=6, lr=1e-2, mask_ratio=0.5))
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.7 * losses[0] and all(np.isfinite(losses))
    with pytest.raises(ValueError, match="mask_ratio"):
        quick(mask_ratio=1.0)


# ----------------------------------------------------------------------------- amp and channels-last "auto"


def test_cpu_bf16_needs_an_x86_bf16_flag():
    from aelab.runtime import cpu_bf16

    assert cpu_bf16("x86_64", {"avx2", "avx512f", "avx512_bf16"}) == (
        True,
        "the CPU has native bf16 (avx512_bf16)",
    )
    assert cpu_bf16("AMD64", ["amx_bf16"])[0]
    # AVX-512 without BF16, AVX2 only: oneDNN emulates bf16 there (measured 20x slower).
    assert not cpu_bf16("x86_64", {"avx2", "avx512f", "avx512_vnni"})[0]
    assert "no native bf16" in cpu_bf16("x86_64", {"avx2"})[1]
    assert not cpu_bf16("x86_64", None)[0]
    assert not cpu_bf16("aarch64", {"bf16", "avx512_bf16"})[0]
    # oneDNN held to AVX2 (as `make test` runs the numerics tests) emulates bf16: not native.
    capped = cpu_bf16("x86_64", {"avx512_bf16", "amx_bf16"}, "AVX2")
    assert not capped[0] and "ONEDNN_MAX_CPU_ISA=AVX2" in capped[1]
    assert cpu_bf16("x86_64", {"amx_bf16"}, "AVX512_CORE_AMX")[0]


@pytest.mark.parametrize(
    "native, parameters, amp, channels_last, expected",
    [
        (True, 2_000_000, "auto", "auto", ("bf16", False)),
        (False, 2_000_000, "auto", "auto", (None, True)),
        # A small model: per-operation overhead dominates, both options cost more than they save.
        (True, 23_000, "auto", "auto", (None, False)),
        (False, 23_000, "auto", "auto", (None, False)),
        # What the user asks for is kept whatever the probe says.
        (False, 2_000_000, "bf16", "auto", ("bf16", False)),
        (True, 2_000_000, "none", "auto", (None, True)),
        (True, 2_000_000, None, False, (None, False)),
        (False, 23_000, "bf16", True, ("bf16", True)),
    ],
)
def test_resolve_speed_follows_the_probe(
    monkeypatch, native, parameters, amp, channels_last, expected
):
    from aelab import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: (native, "probe says so"))
    choice = runtime.resolve_speed(amp, channels_last, "cpu", parameters=parameters)
    assert (choice.amp, choice.channels_last) == expected
    # Nothing is timed: asking again gives the same answer.
    assert runtime.resolve_speed(amp, channels_last, "cpu", parameters=parameters) == choice
    if amp == "auto" and native and parameters > 1e6:
        assert choice.reason == "probe says so"


def test_amp_auto_is_recorded_printed_and_kept_on_resume(tmp_path, monkeypatch, capfd):
    """bf16 where the probe says native, recorded in config.json; a resumed run keeps it."""
    from aelab import runtime
    from aelab.training import batch_factory, speed

    monkeypatch.setattr(runtime, "SMALL_MODEL_PARAMETERS", 0)
    monkeypatch.setattr(runtime, "native_bf16", lambda device: (True, "native here"))
    monkeypatch.setattr(speed, "_ANNOUNCED", set())
    data = squares(48)
    cfg = quick(epochs=2, restore_best=False)
    assert cfg.amp == "auto" and cfg.channels_last == "auto"
    straight = tiny(seed=1)
    res = pretrain(straight, data, config=quick(epochs=2, progress=True), out_dir=tmp_path / "a")
    assert (res.speed.amp, res.speed.channels_last) == ("bf16", False)
    assert "amp: bf16, channels-last: off (native here)" in capfd.readouterr().err
    recorded = json.loads((tmp_path / "a" / "config.json").read_text())
    assert recorded["config"]["amp"] == "auto"
    assert recorded["speed"] == {"amp": "bf16", "channels_last": False, "reason": "native here"}

    # The same run, stopped in its second epoch, then resumed where the probe says no.
    straight = tiny(seed=1)
    pretrain(straight, data, config=cfg, out_dir=tmp_path / "b")
    step, calls = reconstruction_step(), {"n": 0}

    def crash_in_epoch_two(model, batch, stage):
        calls["n"] += 1
        if calls["n"] > 3:  # 48 images / 16 = 3 steps per epoch
            raise KeyboardInterrupt
        return step(model, batch, stage)

    factory = batch_factory(
        data, batch_size=16, shuffle=True, seed=0, device=torch.device("cpu"), labels=False
    )
    trainer = Trainer(
        tiny(seed=1), crash_in_epoch_two, factory, config=cfg, run_dir=tmp_path / "c",
        model_name="convae",
        run_config={"task": "pretrain", "data": {"train": 48, "val": None}, "augment": False},
        data_digests={"training images": data_digest(data), "validation images": None},
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(runtime, "native_bf16", lambda device: (False, "not here"))
    assert pretrain(tiny(), data, config=cfg).speed.channels_last  # a new run: float32 now
    fresh = tiny(seed=99)
    res = pretrain(fresh, data, config=cfg, out_dir=tmp_path / "c", resume=True)
    assert (res.speed.amp, res.speed.channels_last) == ("bf16", False)
    assert differing_keys(straight.state_dict(), fresh.state_dict(), atol=1e-6) == []


def test_small_models_train_in_float32_on_any_machine():
    """convae_tiny is below the size where bf16 and channels-last pay, so "auto" keeps float32."""
    res = pretrain(tiny(), squares(16), config=quick(epochs=1))
    assert res.speed is not None and (res.speed.amp, res.speed.channels_last) == (None, False)


def test_speed_settings_are_checked():
    assert TrainConfig(amp="none").amp is None
    for bad in ({"amp": "fp16"}, {"amp": True}, {"channels_last": "yes"}, {"channels_last": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainConfig(**bad)


def test_differing_keys_names_the_tensors_that_differ():
    a = {"w": torch.zeros(3), "b": torch.ones(2)}
    assert differing_keys(a, {k: v.clone() for k, v in a.items()}) == []
    assert differing_keys(a, {"w": torch.zeros(3), "b": torch.tensor([1.0, 1.5])}) == ["b"]
    assert differing_keys(a, {"w": torch.full((3,), 1e-7), "b": a["b"]}, atol=1e-6) == []
    assert differing_keys(a, {"w": a["w"]}) == ["b"]
