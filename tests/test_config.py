import dataclasses
from pathlib import Path

import pytest

from pyro_vae import config as C
from pyro_vae.errors import ConfigError

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_models_vae_toml_equals_builtin_defaults():
    """`pyro-vae train` without the source tree falls back to Config(); it must be vae.toml."""
    assert C.load_recipe(MODELS / "vae.toml") == C.Config()


def test_every_recipe_loads():
    for path in MODELS.glob("*.toml"):
        assert C.load_recipe(path).name == path.stem


def test_roundtrip_dict():
    cfg = C.Config()
    assert C.Config.from_dict(cfg.to_dict()) == cfg


def test_unknown_key_is_an_error(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[model]\nlatent_dims = 4\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['latent_dims'\].*latent_dim"):
        C.load_recipe(p)
    p.write_text('[optim]\nlr = 1\n')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['optim'\]"):
        C.load_recipe(p)


def test_wrong_type_is_an_error(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[train]\nepochs = "ten"\n')
    with pytest.raises(ConfigError, match="epochs: expected int"):
        C.load_recipe(p)
    p.write_text('[train]\nlr = 1\n')  # an int is accepted for a float
    assert C.load_recipe(p).train.lr == 1.0


def test_invalid_toml(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        C.load_recipe(p)


def test_missing_recipe_lists_known():
    with pytest.raises(ConfigError, match=r"no recipe named 'nope'; known recipes: \[.*'vae'"):
        C.resolve_recipe("nope")
    with pytest.raises(ConfigError, match="not found"):
        C.resolve_recipe("nope.toml")


def test_overrides():
    cfg = C.apply_overrides(C.Config(), {"train.epochs": 3, "model.hidden": [8, 8], "name": "x"})
    assert cfg.train.epochs == 3 and cfg.model.hidden == [8, 8] and cfg.name == "x"
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        C.apply_overrides(C.Config(), {"train.epoch": 3})
    with pytest.raises(ConfigError, match="TABLE.KEY"):
        C.apply_overrides(C.Config(), {"epochs": 3})


def test_parse_value():
    assert C.parse_value("10") == 10
    assert C.parse_value("1e-3") == 1e-3
    assert C.parse_value("[200, 100]") == [200, 100]
    assert C.parse_value("true") is True
    assert C.parse_value("fashion-mnist") == "fashion-mnist"


@pytest.mark.parametrize("field, registry", [("prior", "PRIORS"), ("guide", "GUIDES"),
                                             ("likelihood", "LIKELIHOODS")])
def test_unknown_component_lists_valid_names(field, registry):
    m = dataclasses.replace(C.ModelConfig(), **{field: "nonesuch"})
    valid = sorted(getattr(C, registry))
    with pytest.raises(ConfigError, match=f"unknown {field} 'nonesuch'; choose one of .*{valid[0]}"):
        C.build_vae(m, (64,))


def test_bad_sizes():
    with pytest.raises(ConfigError, match="latent_dim"):
        C.build_vae(C.ModelConfig(latent_dim=0), (64,))
    with pytest.raises(ConfigError, match="hidden"):
        C.build_vae(C.ModelConfig(hidden=[0]), (64,))
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        C.build_vae(C.ModelConfig(activation="swish"), (64,))


def test_build_vae_mirrors_hidden_layers():
    vae = C.build_vae(C.ModelConfig(latent_dim=2, hidden=[32, 8]), (64,))
    enc = [m.out_features for m in vae.posterior.encoder.net if hasattr(m, "out_features")]
    dec = [m.out_features for m in vae.likelihood.decoder.net if hasattr(m, "out_features")]
    assert enc == [32, 8, 4] and dec == [8, 32, 64]


@pytest.mark.parametrize("key, value", [("eval.k", 0), ("eval.particle_batch", -1),
                                        ("train.batch_size", 0), ("train.lr", 0.0),
                                        ("model.latent_dim", 0), ("train.epochs", -1)])
def test_non_positive_settings_are_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key} must be"):
        C.apply_overrides(C.Config(), {key: value})
