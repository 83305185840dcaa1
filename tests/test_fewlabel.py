"""Few-label fine-tuning: FixMatch, named recipes, and that a pre-trained encoder is really used."""

import numpy as np
import pytest
import torch

from aelab.data import ImageDataset, make_augment
from aelab.models import create_model
from aelab.tasks import run_finetune
from aelab.training import (
    FINETUNE_RECIPES,
    Cutout,
    FinetuneConfig,
    PretrainConfig,
    batch_factory,
    finetune,
    finetune_recipe,
    fixmatch_step,
    load_model,
    make_strong_augment,
    pretrain,
    save_checkpoint,
)
from conftest import make_shapes


def shapes(n: int, seed: int = 0) -> ImageDataset:
    images, labels, names = make_shapes(n, seed=seed)
    return ImageDataset(
        images=torch.from_numpy(images[:, None]),
        labels=torch.from_numpy(labels),
        ids=[f"{seed}-{i}" for i in range(n)],
        class_names=names,
    )


def unlabeled(ds: ImageDataset) -> ImageDataset:
    return ImageDataset(images=ds.images, labels=None, ids=ds.ids)


def tiny(num_classes: int = 3):
    torch.manual_seed(0)
    return create_model("convae_tiny", num_classes=num_classes)


def fast(**kw):
    # A few steps: no floor on a FixMatch epoch's length (min_epoch_steps).
    base = {"progress": False, "device": "cpu", "batch_size": 16, "epochs": 1, "min_epoch_steps": 0}
    return {**base, **kw}


def test_cutout_fills_one_clipped_square_per_image():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    out = Cutout(size=0.5, value=0.5)(x)
    area = (out == 0.5).sum(dim=(1, 2, 3))
    assert out.shape == x.shape
    assert area.max() == 64 and area.min() > 0  # 8x8 at most, clipped at the border
    assert torch.equal(Cutout(0.5).eval()(x), x)
    with pytest.raises(ValueError, match="cutout size"):
        Cutout(0.0)


def test_strong_augment_changes_images_and_keeps_shape():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 16, 16)
    y = make_strong_augment()(x)
    assert y.shape == x.shape and not torch.allclose(x, y)
    with pytest.raises(ValueError, match="cutout"):
        make_strong_augment(cutout=1.5)


def test_fixmatch_step_masks_unconfident_and_adds_terms():
    model = tiny()
    x, y = torch.rand(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    xu = torch.rand(12, 1, 16, 16)
    model.train()
    # A threshold of 1.0 is (almost surely) never reached: the unlabeled term is 0.
    out = fixmatch_step(weak=None, strong=make_strong_augment(), threshold=1.0)(
        model, (x, y, xu), "train"
    )
    assert float(out["mask"]) == 0.0 and float(out["unsup"]) == 0.0
    assert float(out["loss"].detach()) == pytest.approx(float(out["ce"]), rel=1e-6)
    # Any confidence counts at a tiny threshold; the loss is the weighted sum.
    step = fixmatch_step(
        weak=None, strong=make_strong_augment(), threshold=1e-6, unlabeled_weight=2.0,
        recon_weight=0.5,
    )  # fmt: skip
    out = step(model, (x, y, xu), "train")
    loss = out.pop("loss")
    out = {k: v for k, v in out.items()}
    out["loss"] = loss.detach()
    assert float(out["mask"]) == 1.0 and float(out["unsup"]) > 0
    want = float(out["ce"]) + 2.0 * float(out["unsup"]) + 0.5 * float(out["recon"])
    assert float(out["loss"]) == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert model.encoder[0][0].weight.grad is not None
    val = step(model, (x, y), "val")
    assert set(val) == {"loss", "acc", "n"}
    with pytest.raises(ValueError, match="threshold"):
        fixmatch_step(weak=None, strong=make_strong_augment(), threshold=0.0)


def test_semi_epoch_is_a_pass_over_the_unlabeled_images():
    lab, unl = shapes(10), unlabeled(shapes(100, seed=1))
    factory = batch_factory(
        lab, batch_size=4, shuffle=True, seed=0, device=torch.device("cpu"), labels=True,
        unlabeled=unl, unlabeled_batch_size=12, epoch_over_unlabeled=True,
    )  # fmt: skip
    batches = list(factory(0))
    assert len(batches) == 100 // 12
    x, y, xu = batches[0]
    assert x.shape == (4, 1, 16, 16) and y.shape == (4,) and xu.shape == (12, 1, 16, 16)
    # The labelled images repeat in whole permutations.
    seen = torch.cat([b[1] for b in batches])
    assert len(seen) == 8 * 4


def test_semi_epoch_has_at_least_min_epoch_steps():
    """A small unlabeled pool does not shrink the schedule: its permutation wraps round."""
    lab, unl = shapes(10), unlabeled(shapes(30, seed=1))
    factory = batch_factory(
        lab, batch_size=4, shuffle=True, seed=0, device=torch.device("cpu"), labels=True,
        unlabeled=unl, unlabeled_batch_size=12, epoch_over_unlabeled=True, min_epoch_steps=7,
    )  # fmt: skip
    batches = list(factory(0))
    assert len(batches) == 7  # not 30 // 12 == 2
    # Every unlabeled image comes round before any comes a third time.
    flat = torch.cat([b[2].flatten(1) for b in batches])
    _, counts = torch.unique(flat, dim=0, return_counts=True)
    assert counts.min() >= 2 and counts.max() <= 3 and counts.sum() == 7 * 12
    # A long pool keeps its own length.
    long = batch_factory(
        lab, batch_size=4, shuffle=True, seed=0, device=torch.device("cpu"), labels=True,
        unlabeled=unlabeled(shapes(120, seed=1)), unlabeled_batch_size=12,
        epoch_over_unlabeled=True, min_epoch_steps=7,
    )  # fmt: skip
    assert len(long(0)) == 10
    with pytest.raises(ValueError, match="min_epoch_steps"):
        FinetuneConfig(min_epoch_steps=-1)
    assert finetune_recipe("default")[0].min_epoch_steps == 250


def test_semi_epoch_shards_labelled_and_unlabeled_batches_across_ranks(monkeypatch):
    # Two simulated ranks together see exactly the single process's global batches.
    from aelab.training import distributed as dist_utils

    lab, unl = shapes(10), unlabeled(shapes(100, seed=1))
    kw = {
        "batch_size": 4, "shuffle": True, "seed": 0, "device": torch.device("cpu"),
        "labels": True, "unlabeled": unl, "unlabeled_batch_size": 12,
        "epoch_over_unlabeled": True,
    }  # fmt: skip
    whole = list(batch_factory(lab, **kw)(1))
    ranks = []
    for rank in range(2):
        monkeypatch.setattr(dist_utils, "info", lambda r=rank: dist_utils.DistInfo(r, 2, 0, "gloo"))
        ranks.append(list(batch_factory(lab, **kw)(1)))
    assert len(ranks[0]) == len(ranks[1]) == len(whole) == 100 // 12
    for b, (x, y, xu) in enumerate(whole):
        (x0, y0, u0), (x1, y1, u1) = ranks[0][b], ranks[1][b]
        assert x0.shape[0] == 2 and u0.shape[0] == 6
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
        assert torch.equal(torch.cat([u0, u1]), xu)
    with pytest.raises(ValueError, match="unlabeled batch size 9"):
        batch_factory(lab, **{**kw, "unlabeled_batch_size": 9})


def test_distribution_alignment_spreads_pseudo_labels_over_classes(monkeypatch):
    """A head biased towards class 0 pseudo-labels everything 0; alignment undoes the bias."""
    import torch.nn.functional as F

    model = tiny()
    with torch.no_grad():
        model.classifier[-1].bias.copy_(torch.tensor([4.0, 0.0, 0.0]))
    x, y, xu = torch.rand(3, 1, 16, 16), torch.tensor([0, 1, 2]), torch.rand(60, 1, 16, 16)
    targets: list[torch.Tensor] = []
    cross_entropy = F.cross_entropy

    def spy(logits, target, *a, **kw):  # the last call's targets are the pseudo-labels
        targets.append(target)
        return cross_entropy(logits, target, *a, **kw)

    monkeypatch.setattr(F, "cross_entropy", spy)
    seen = {}
    for align in (False, True):
        model.train()
        step = fixmatch_step(weak=None, strong=lambda v: v, threshold=1e-6, align=align)
        step(model, (x, y, xu), "train")
        seen[align] = torch.bincount(targets[-1], minlength=3)
    assert seen[False][0] == 60  # the bias wins everywhere
    assert seen[True].max() < 60 and (seen[True] > 0).sum() >= 2, seen


@pytest.mark.parametrize("name", sorted(FINETUNE_RECIPES))
def test_every_named_recipe_trains_a_few_steps(name):
    config, augment = finetune_recipe(name, **fast(threshold=0.5))
    lab, unl = shapes(30), unlabeled(shapes(96, seed=1))
    model = tiny()
    res = finetune(
        model, lab, unlabeled=unl if config.uses_unlabeled else None, config=config,
        augment=make_augment(augment),
    )  # fmt: skip
    row = res.history[0]
    assert np.isfinite(row["train_loss"])
    if config.semi == "fixmatch":
        assert {"train_ce", "train_unsup", "train_mask"} <= set(row)
        assert res.history and len(res.history) == 1


def test_recipe_overrides_and_errors():
    config, augment = finetune_recipe("plain", epochs=2, augment="none", lr=None)
    assert config.epochs == 2 and augment == "none" and config.semi == "none"
    assert config.lr == FinetuneConfig().lr  # None falls through to the recipe (the defaults)
    assert finetune_recipe("default")[0] == finetune_recipe("fixmatch")[0]
    assert finetune_recipe("default")[0].label_smoothing == 0.0  # it would cap confidence
    with pytest.raises(ValueError, match="unknown fine-tuning recipe"):
        finetune_recipe("magic")
    with pytest.raises(ValueError, match="unknown FinetuneConfig fields"):
        finetune_recipe("plain", warp_speed=9)
    with pytest.raises(ValueError, match="unknown semi"):
        FinetuneConfig(semi="mixmatch")
    with pytest.raises(ValueError, match="unlabeled_ratio"):
        FinetuneConfig(unlabeled_ratio=0)
    with pytest.raises(ValueError, match="pass unlabeled"):
        finetune(tiny(), shapes(12), config=FinetuneConfig(semi="fixmatch", **fast()))


@pytest.mark.slow
def test_pretrained_encoder_is_loaded_and_starts_ahead(tmp_path):
    """run_finetune(init=...) starts from the pre-trained weights, and they help at once."""
    data = shapes(150)
    pre = tiny()
    pretrain(
        pre, unlabeled(data), config=PretrainConfig(epochs=8, lr=3e-3, batch_size=16,
                                                    progress=False, device="cpu"),
        out_dir=tmp_path / "pretrain", model_name="convae_tiny",
    )  # fmt: skip
    loaded, _ = load_model(tmp_path / "pretrain", which="last")
    fresh = tiny()
    for k, v in loaded.encoder.state_dict().items():
        assert torch.equal(v, pre.encoder.state_dict()[k])
    assert not torch.equal(loaded.encoder[0][0].weight, fresh.encoder[0][0].weight)

    # With the encoder frozen (only the head learns) the latent alone decides the loss.
    common = dict(labels_per_class=20, val_per_class=10, recipe="plain", augment="none",
                  epochs=3, batch_size=10, lr=3e-3, freeze_encoder_epochs=3, progress=False,
                  device="cpu")  # fmt: skip
    with_init = run_finetune(data, tmp_path, init=tmp_path / "pretrain", name="a", **common)
    scratch = run_finetune(data, tmp_path, model="convae_tiny", name="b", **common)
    # The fine-tuned encoder is the pre-trained one (frozen), not a fresh init.
    tuned, _ = load_model(with_init.run_dir)
    ft_w = tuned.encoder[0][0].weight.detach().cpu()
    assert torch.equal(ft_w, pre.encoder[0][0].weight.detach().cpu())
    a, b = with_init.history, scratch.history
    assert a[-1]["train_loss"] < b[-1]["train_loss"], (a, b)
    assert with_init.best_val_acc > scratch.best_val_acc, (a, b)


def test_run_finetune_default_recipe_uses_the_unlabeled_pool(tmp_path):
    data = shapes(90)
    save_checkpoint(tmp_path / "init", tiny(), model_name="convae_tiny")
    res = run_finetune(
        data, tmp_path, init=tmp_path / "init", labels_per_class=5, val_per_class=5,
        epochs=1, batch_size=8, unlabeled_ratio=2, threshold=0.5, progress=False, device="cpu",
        min_epoch_steps=0,
    )  # fmt: skip
    row = res.history[0]
    assert "train_mask" in row  # FixMatch ran
    # One pass over the 75 non-validation images in unlabeled batches of 16.
    assert res.splits.unlabeled == 75
