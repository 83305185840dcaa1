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
        ({"image_size": 48}, "power of two"),
        ({"image_size": 16, "widths": (8, 8, 8, 8, 8)}, "need image_size"),
        ({"in_channels": 0}, "in_channels"),
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
