import dataclasses
from pathlib import Path

import pytest

from pyro_vae import config, recipes, registries
from pyro_vae.errors import ConfigError

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_models_vae_toml_equals_builtin_defaults():
    """`pyro-vae train` without the source tree falls back to Config(); it must be vae.toml."""
    assert recipes.load_recipe(MODELS / "vae.toml") == config.Config()


def test_every_recipe_loads():
    for path in MODELS.glob("*.toml"):
        assert recipes.load_recipe(path).name == path.stem


def test_roundtrip_dict():
    cfg = config.Config()
    assert config.Config.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[model]\nlatent_dims = 4\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['latent_dims'\].*latent_dim"):
        recipes.load_recipe(p)
    p.write_text('[optim]\nlr = 1\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['optim'\]"):
        recipes.load_recipe(p)


def test_wrong_type_is_an_error(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[train]\nepochs = "ten"\n')
    with pytest.raises(ConfigError, match="epochs: expected int"):
        recipes.load_recipe(p)
    p.write_text('[train]\nlr = 1\n')  # an int is accepted for a float
    assert recipes.load_recipe(p).train.lr == 1.0


def test_invalid_toml(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        recipes.load_recipe(p)


def test_missing_recipe_lists_known():
    with pytest.raises(ConfigError, match=r"no recipe named 'nope'; known recipes: \[.*'vae'"):
        recipes.resolve_recipe("nope")
    with pytest.raises(ConfigError, match="not found"):
        recipes.resolve_recipe("nope.toml")


def test_overrides():
    cfg = recipes.apply_overrides(config.Config(), {"train.epochs": 3, "model.hidden": [8, 8], "name": "x"})
    assert cfg.train.epochs == 3 and cfg.model.hidden == [8, 8] and cfg.name == "x"
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        recipes.apply_overrides(config.Config(), {"train.epoch": 3})
    with pytest.raises(ConfigError, match="TABLE.KEY"):
        recipes.apply_overrides(config.Config(), {"epochs": 3})


def test_parse_value():
    assert recipes.parse_value("10") == 10
    assert recipes.parse_value("1e-3") == 1e-3
    assert recipes.parse_value("[200, 100]") == [200, 100]
    assert recipes.parse_value("true") is True
    assert recipes.parse_value("fashion-mnist") == "fashion-mnist"


@pytest.mark.parametrize("field, registry", [("prior", "PRIORS"), ("guide", "GUIDES"),
                                             ("likelihood", "LIKELIHOODS")])
def test_unknown_component_lists_valid_names(field, registry):
    m = dataclasses.replace(config.ModelConfig(), **{field: "nonesuch"})
    valid = sorted(getattr(registries, registry))
    with pytest.raises(ConfigError, match=f"unknown {field} 'nonesuch'; choose one of .*{valid[0]}"):
        registries.build_vae(m, (64,))


def test_bad_sizes():
    with pytest.raises(ConfigError, match="latent_dim"):
        registries.build_vae(config.ModelConfig(latent_dim=0), (64,))
    with pytest.raises(ConfigError, match="hidden"):
        registries.build_vae(config.ModelConfig(hidden=[0]), (64,))
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        registries.build_vae(config.ModelConfig(activation="swish"), (64,))


def test_build_vae_mirrors_hidden_layers():
    vae = registries.build_vae(config.ModelConfig(latent_dim=2, hidden=[32, 8]), (64,))
    enc = [m.out_features for m in vae.posterior.encoder.net if hasattr(m, "out_features")]
    dec = [m.out_features for m in vae.likelihood.decoder.net if hasattr(m, "out_features")]
    assert enc == [32, 8, 4] and dec == [8, 32, 64]


@pytest.mark.parametrize("key, value", [("eval.k", 0), ("eval.particle_batch", -1),
                                        ("train.batch_size", 0), ("train.lr", 0.0),
                                        ("model.latent_dim", 0), ("train.epochs", -1)])
def test_non_positive_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key} must be"):
        recipes.apply_overrides(config.Config(), {key: value})
