"""Recipe files: ``models/NAME.toml`` read into a :class:`~pyro_vae.config.Config`,
found by name, and changed by ``--set TABLE.KEY=VALUE`` overrides.

A recipe has a ``name`` and four tables::

    name = "vae"
    [model]            # what the VAE is made of: see ModelConfig
    [data]             # which data and how it is binarized: see DataConfig
    [train]            # optimizer and loop settings: see TrainConfig
    [eval]             # how it is evaluated: see EvalConfig
"""

import tomllib
from pathlib import Path

from .config import Config
from .errors import ConfigError


def parse_value(text):
    """Parse a command-line override value as TOML (``10``, ``1e-3``, ``[200, 100]``,
    ``true``), falling back to the plain string (``fashion-mnist``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config, overrides):
    """Return a copy of ``config`` with ``{"table.key": value}`` overrides applied.

    :raises ConfigError: for an unknown key or a wrongly typed value.
    """
    d = config.to_dict()
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if len(parts) == 1 and parts[0] == "name":
            d["name"] = value
            continue
        if len(parts) != 2 or parts[0] not in ("model", "data", "train", "eval"):
            raise ConfigError(f"override {dotted!r}: expected TABLE.KEY with TABLE one of "
                              "model, data, train, eval (e.g. train.epochs=10), or name")
        table, key = parts
        if key not in d[table]:
            raise ConfigError(f"override {dotted!r}: unknown key {key!r}; valid keys of [{table}] "
                              f"are {sorted(d[table])}")
        d[table][key] = value
    return Config.from_dict(d, where="overrides")


def load_recipe(path):
    """Read ``models/NAME.toml`` into a :class:`Config`.

    :raises ConfigError: if the file is missing, is not valid TOML, or has unknown keys.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"recipe {path} is a folder; give a .toml file or a recipe name")
    if not path.is_file():
        raise ConfigError(f"recipe {path} not found; give a path to a .toml file or the name "
                          f"of one in models/ ({', '.join(list_recipes()) or 'none found'})")
    try:
        d = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {path}: not valid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"recipe {path}: not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x}); "
                          "TOML files are UTF-8: save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"recipe {path}: cannot read it ({e.strerror})") from None
    d.setdefault("name", path.stem)
    return Config.from_dict(d, where=f"recipe {path}")


def recipe_dirs():
    """Folders searched for recipes by name: ``./models`` and the source tree's ``models/``."""
    here = Path(__file__).resolve().parent.parent / "models"
    return [Path("models"), here]


def list_recipes():
    """Names of the recipes found in :func:`recipe_dirs`."""
    names = set()
    for d in recipe_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def resolve_recipe(name_or_path):
    """Find a recipe given as a path or a name (``vae`` -> ``models/vae.toml``).

    ``None`` means the default recipe ``vae``; if no ``vae.toml`` is found (e.g. an
    installed package without the source tree), the built-in defaults of :class:`Config`,
    which equal ``models/vae.toml``, are used.

    :returns: a :class:`Config`.
    :raises ConfigError: if a named recipe is not found.
    """
    if name_or_path is None:
        for d in recipe_dirs():
            if (d / "vae.toml").is_file():
                return load_recipe(d / "vae.toml")
        return Config()
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return load_recipe(p)
    for d in recipe_dirs():
        if (d / f"{name_or_path}.toml").is_file():
            return load_recipe(d / f"{name_or_path}.toml")
    raise ConfigError(f"no recipe named {name_or_path!r}; known recipes: {list_recipes()}")
