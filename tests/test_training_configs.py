"""One settings class per task: FinetuneConfig holds every fine-tuning setting, recipes are
named presets of it (FinetuneConfig.recipe), and the old names still work."""

from __future__ import annotations

import dataclasses

import pytest

from aelab.training import FINETUNE_RECIPES, FinetuneConfig, PretrainConfig, finetune_recipe


def test_recipe_is_a_preset_of_the_one_class():
    plain = FinetuneConfig.recipe("plain")
    assert plain == FinetuneConfig(augment="standard")
    fix = FinetuneConfig.recipe("default", epochs=5, lr=None)
    assert fix.semi == "fixmatch" and fix.augment == "weak" and fix.threshold == 0.8
    assert fix.epochs == 5 and fix.lr == FinetuneConfig().lr  # None falls through
    for name, values in FINETUNE_RECIPES.items():
        config = FinetuneConfig.recipe(name)
        assert all(getattr(config, k) == v for k, v in values.items()), name
    with pytest.raises(ValueError, match="unknown fine-tuning recipe 'magic'; use one of"):
        FinetuneConfig.recipe("magic")
    with pytest.raises(ValueError, match="unknown FinetuneConfig fields: warp_speed"):
        FinetuneConfig.recipe("plain", warp_speed=9)
    with pytest.raises(ValueError, match="augment 'strong'"):
        FinetuneConfig.recipe("plain", augment="strong")
    with pytest.raises(ValueError, match="labels_per_class must be >= 0"):
        FinetuneConfig(labels_per_class=-1)


def test_the_task_settings_live_in_the_training_configs():
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert {"model", "augment", "labels_per_class", "val_per_class", "val_fraction"} <= names
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    assert {"model", "model_overrides", "augment", "val_fraction", "max_images"} <= names
    with pytest.raises(ValueError, match="max_images must be >= 0"):
        PretrainConfig(max_images=-1)


def test_old_names_are_thin_aliases():
    from aelab.tasks import FinetuneOptions, PretrainOptions, finetune_options

    assert FinetuneOptions is FinetuneConfig and PretrainOptions is PretrainConfig
    config, augment = finetune_recipe("plain", epochs=2, augment="none")
    assert config == FinetuneConfig.recipe("plain", epochs=2, augment="none") and augment == "none"
    # finetune_options also converts text (the command line's, the study file's)
    assert finetune_options("default", epochs="4") == FinetuneConfig.recipe("default", epochs=4)
    with pytest.raises(ValueError, match="unknown recipe 'best'"):
        finetune_options("best")
