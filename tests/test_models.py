import time

import numpy as np
import pytest
import torch

from aelab.models import ConvAEConfig, ConvAutoencoder, create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    cfg = model.config
    x = torch.rand(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    recon, logits, z = model(x)
    assert recon.shape == x.shape
    assert logits.shape == (3, cfg.num_classes)
    assert z.shape == (3, cfg.latent_dim)
    assert torch.isfinite(recon).all() and torch.isfinite(logits).all()
    assert recon.min() >= 0 and recon.max() <= 1
    loss = torch.nn.functional.mse_loss(recon, x) + logits.logsumexp(1).mean()
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
    ]
    assert not missing, f"parameters without a finite gradient: {missing}"


def test_convae_is_the_study_table():
    model = create_model("convae")
    n = sum(p.numel() for p in model.parameters())
    assert 23.3e6 < n < 23.5e6
    x = torch.rand(2, 3, 64, 64)
    shapes = []
    h = x
    for layer in model.encoder:
        h = layer(h)
        shapes.append(tuple(h.shape[1:]))
    assert (64, 32, 32) in shapes and (512, 4, 4) in shapes and shapes[-1] == (1024,)


def test_family_parameters():
    model = create_model(
        "convae", in_channels=1, image_size=128, widths=(8, 16, 32), latent_dim=20, num_classes=4
    )
    recon, logits, z = model.eval()(torch.rand(2, 1, 128, 128))
    assert recon.shape == (2, 1, 128, 128) and logits.shape == (2, 4) and z.shape == (2, 20)


def test_reset_classifier_and_parts():
    model = create_model("convae_tiny").eval()
    x = torch.rand(2, 1, 16, 16)
    z = model.encode(x)
    assert model.decode(z).shape == x.shape
    model.reset_classifier(3)
    assert model.classify(z).shape == (2, 3)
    assert model.config.num_classes == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 40}, "divisible by 16"),
        ({"image_size": 28, "widths": (8, 8, 8)}, "divisible by 8"),
        ({"image_size": 16, "widths": (8, 8, 8, 8, 8)}, "need image_size"),
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": 2}, "in_channels must be 1 .* or 3"),
        ({"in_channels": 3.0}, "in_channels"),
        ({"in_channels": True}, "in_channels"),
        ({"image_size": 8}, r"image_size must be in \[16, 4096\], got 8"),
        ({"image_size": 8192}, r"image_size must be in \[16, 4096\], got 8192"),
        ({"image_size": 64.0}, "image_size must be an integer"),
        ({"image_size": "64"}, "image_size must be an integer"),
        ({"image_size": None}, "image_size must be an integer"),
        ({"widths": ()}, "widths must be a non-empty list"),
        ({"widths": "64"}, "widths must be a non-empty list"),
        ({"widths": 64}, "widths must be a non-empty list"),
        ({"widths": (8, 0)}, r"widths\[1\] must be in \[1, 16384\], got 0"),
        ({"widths": (8, 10**9)}, r"widths\[1\] must be in \[1, 16384\]"),
        ({"widths": (8, 16.5)}, r"widths\[1\] must be an integer"),
        ({"widths": (8, "16")}, r"widths\[1\] must be an integer"),
        ({"latent_dim": 0}, "latent_dim must be in"),
        ({"latent_dim": 10**12}, "latent_dim must be in"),
        ({"num_classes": -1}, "num_classes must be in"),
        ({"head_hidden": 2.5}, "head_hidden must be an integer"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": float("nan")}, "dropout"),
        ({"dropout": "0.1"}, "dropout must be a number"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConvAEConfig(**kwargs)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        create_model("nope")


def test_config_round_trip():
    cfg = ConvAEConfig(in_channels=1, image_size=32)
    assert ConvAEConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(ConvAutoencoder(cfg), torch.nn.Module)


def test_config_accepts_numpy_and_list_fields():
    cfg = ConvAEConfig(in_channels=np.int64(1), image_size=np.int32(32), widths=[8, 16])
    assert cfg.widths == (8, 16) and type(cfg.image_size) is int and type(cfg.in_channels) is int
    with pytest.raises(ValueError, match="JSON object"):
        ConvAEConfig.from_dict([1, 2])


@pytest.mark.parametrize("name", list_models())
def test_parameter_estimate_is_exact(name):
    model = create_model(name)
    assert sum(model.config.parameter_counts().values()) == sum(
        p.numel() for p in model.parameters()
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 3, "image_size": 32, "widths": (4,), "latent_dim": 5, "num_classes": 7},
        {
            "in_channels": 1,
            "image_size": 64,
            "widths": (3, 5, 7),
            "head_hidden": 9,
            "latent_dim": 6,
        },
    ],
)
def test_parameter_and_activation_estimates_on_odd_shapes(kwargs):
    cfg = ConvAEConfig(**kwargs)
    model = ConvAutoencoder(cfg)
    assert sum(cfg.parameter_counts().values()) == sum(p.numel() for p in model.parameters())
    # Activations: count what the layers produce for one image (ReLUs work in place).
    produced = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: produced.append(out.numel()))
        for m in model.modules()
        if isinstance(
            m,
            torch.nn.Conv2d
            | torch.nn.ConvTranspose2d
            | torch.nn.Linear
            | torch.nn.BatchNorm1d
            | torch.nn.BatchNorm2d
            | torch.nn.Sigmoid,
        )
    ]
    model.eval()(torch.rand(1, cfg.in_channels, cfg.image_size, cfg.image_size))
    for h in hooks:
        h.remove()
    assert cfg.activation_count() == sum(produced)


def test_huge_config_refused_fast_without_allocating():
    # What a hand-edited model.json might ask for: about 640 GB to train.
    meta_config = {
        "in_channels": 3,
        "image_size": 1024,
        "widths": [64, 128, 256, 512],
        "latent_dim": 9537,
        "num_classes": 10,
        "head_hidden": 1024,
        "dropout": 0.0,
    }
    cfg = ConvAEConfig.from_dict(meta_config)
    assert 600e9 < cfg.training_bytes() < 700e9
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as err:
        create_model("convae", **meta_config)
    assert time.perf_counter() - t0 < 0.5
    msg = str(err.value)
    assert "\n" not in msg and "about 641 GB" in msg
    assert "latent layers set by widths[-1]=512, image_size=1024 and latent_dim=9537" in msg
    # The limit is what the machine has; with a stated limit the message names it.
    with pytest.raises(ValueError, match="more than the 100 GB of memory"):
        cfg.check_memory(memory=100 * 10**9)
    cfg.check_memory(memory=10**12)  # fits a 1 TB machine


def test_wide_convolutions_named_when_they_dominate():
    cfg = ConvAEConfig(image_size=16, widths=(16384, 16384, 16384, 16384), latent_dim=1)
    with pytest.raises(ValueError, match=r"most in the convolutions set by widths=\[16384"):
        cfg.check_memory(memory=10**9)


def test_reset_classifier_validates(monkeypatch):
    model = create_model("convae_tiny")
    with pytest.raises(ValueError, match="num_classes must be in"):
        model.reset_classifier(0)
    # A machine with 100 MB: 1 M classes x 32 hidden units (34 M parameters) do not fit.
    monkeypatch.setattr("aelab.models.convae.physical_memory", lambda: 100 * 10**6)
    with pytest.raises(ValueError, match="most in the head set by .*num_classes=1048576"):
        model.reset_classifier(1 << 20)
    assert model.config.num_classes == 10 and model.classifier[-1].out_features == 10
    model.reset_classifier(3)
    assert model.config.num_classes == 3
