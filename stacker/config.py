"""One loader for every settings file: recipes, level1 configs, holdout rules.

TOML (``.toml``) or YAML (``.yaml``/``.yml``, parsed safely) into a mapping; every problem is
one typed error naming the file (and, for TOML, the line of the syntax error).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from stacker.errors import ConfigError

__all__ = ["load_config", "CONFIG_SUFFIXES"]

CONFIG_SUFFIXES = (".toml", ".yaml", ".yml")


def load_config(
    path: str | os.PathLike[str], what: str = "config file", *, error: type[Exception] = ConfigError
) -> dict[str, Any]:
    """The top-level mapping of a TOML or YAML file; ``error`` (a :class:`ConfigError` by default) otherwise.

    ``what`` names the file's role in messages (``"recipe file"``, ``"rule file"``).  A file
    whose suffix is neither TOML nor YAML is read as TOML.  An empty YAML file is an empty mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {str(p)!r} does not exist" if not p.exists() else f"{what} {str(p)!r} is not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {str(p)!r} cannot be read ({exc})") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
            data = {} if data is None else data
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
    except RecursionError:
        raise error(f"{what} {str(p)!r} cannot be parsed (nested too deeply)") from None
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError: message with line and column
        raise error(f"{what} {str(p)!r} cannot be parsed ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{what} {str(p)!r}: expected a mapping at the top level, got {type(data).__name__}")
    return data
