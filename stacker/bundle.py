"""Blend bundles: a directory with a JSON manifest and each member's fold models in native formats.

Layout::

    bundle/
      manifest.json                   library version, classes, models, feature columns,
                                      schema, recipe, member weights, scores, checksums
      members/<member>/fold<k><ext>   XGBoost .ubj, LightGBM .txt, Keras .keras, JSON
      members/<member>/fold<k><ext>.meta.json

Nothing is pickled.  Every member file's SHA-256 is in the manifest and the
manifest carries a checksum of its own content, so a missing, edited or
truncated file is refused with :class:`~stacker.errors.BundleError` instead of
silently predicting something else.  Members with zero weight are listed (with
their scores) but their models are not written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from stacker.files import atomic_dir, atomic_write_text
from stacker._version import __version__
from stacker.errors import BundleError
from stacker.recipe import MemberSpec
from stacker.table import SCHEMA_VERSION

__all__ = ["MANIFEST", "FORMAT", "FORMAT_VERSION", "save_bundle", "load_bundle", "read_manifest",
           "write_members", "read_members"]

MANIFEST = "manifest.json"
FORMAT = "stacker-blend"
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def write_members(directory: Path, members: list[MemberSpec], weights: np.ndarray, states) -> list[dict[str, Any]]:
    """Write the fold models of members with non-zero weight; return their manifest entries."""
    from stacker.metamodels import get_family

    out = []
    for mi, m in enumerate(members):
        entry = {**m.to_dict(), "weight": float(weights[mi]), "files": []}
        if weights[mi] > 0:
            suffix = get_family(m.family).suffix if m.family != "keras" else ".keras"
            sub = Path("members") / m.name
            (directory / sub).mkdir(parents=True, exist_ok=True)
            for f, st in enumerate(states[mi]):
                if st is None:
                    continue
                data, side = st
                model_rel = sub / f"fold{f}{suffix}"
                side_rel = sub / f"fold{f}{suffix}.meta.json"
                (directory / model_rel).write_bytes(data)
                (directory / side_rel).write_text(json.dumps(side), encoding="utf-8")
                entry["files"].append({
                    "fold": f,
                    "model": model_rel.as_posix(), "model_sha256": _sha256(directory / model_rel),
                    "sidecar": side_rel.as_posix(), "sidecar_sha256": _sha256(directory / side_rel),
                })
        out.append(entry)
    return out


def _checked(directory: Path, rel: str, digest: str) -> bytes:
    path = directory / rel
    if ".." in Path(rel).parts or Path(rel).is_absolute():
        raise BundleError(f"bundle {str(directory)!r}: member path {rel!r} points outside the bundle")
    if not path.is_file():
        raise BundleError(f"bundle {str(directory)!r}: member file {rel!r} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"bundle {str(directory)!r}: member file {rel!r} was modified (checksum mismatch)")
    return data


def read_members(directory: Path, entries: list[dict[str, Any]]):
    """Members and their ``(model bytes, sidecar)`` fold states, verifying checksums."""
    members, states = [], []
    for e in entries:
        m = MemberSpec(str(e["name"]), str(e["family"]), dict(e["params"]), int(e["seed"]))
        n_folds = max([int(fe["fold"]) for fe in e["files"]], default=-1) + 1
        st: list[Any] = [None] * n_folds
        for fe in e["files"]:
            data = _checked(directory, fe["model"], fe["model_sha256"])
            side_raw = _checked(directory, fe["sidecar"], fe["sidecar_sha256"])
            side = json.loads(side_raw)
            if side.get("family") != m.family:
                raise BundleError(f"bundle {str(directory)!r}: {fe['sidecar']!r} is not a {m.family!r} model")
            st[int(fe["fold"])] = (data, side)
        if float(e.get("weight", 0)) > 0 and not e["files"]:
            raise BundleError(f"bundle {str(directory)!r}: member {m.name!r} has weight but no model files")
        members.append(m)
        states.append(st)
    return members, states


def save_bundle(blend, path: str | os.PathLike[str]) -> Path:
    """Write ``blend`` as a bundle directory at ``path`` (atomically replacing an existing one)."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise BundleError(f"bundle path {str(target)!r} exists and is not a directory")
    with atomic_dir(target) as tmp:
        state = blend.get_state(tmp)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "kind": blend.kind,
            "schema_version": SCHEMA_VERSION,
            "classes": state["classes"],
            "models": state["models"],
            "feature_columns": state["features"]["names"],
            "recipe": state["params"]["recipe"],
            "member_weights": {m["name"]: m["weight"] for m in state["members"]},
            "scores": state["scores"]["blend"],
            "state": state,
        }
        manifest["checksum"] = hashlib.sha256(_canonical(manifest)).hexdigest()
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
    return target


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified manifest of a bundle directory."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle {str(root)!r} does not exist or is not a directory")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"bundle {str(root)!r} has no {MANIFEST}; is it a stacker bundle?")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle {str(root)!r}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {str(root)!r}: {MANIFEST} is not a {FORMAT!r} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"bundle {str(root)!r}: format version {version!r} is newer than this stacker "
            f"({__version__}) reads ({FORMAT_VERSION})"
        )
    claimed = manifest.pop("checksum", None)
    if claimed != hashlib.sha256(_canonical(manifest)).hexdigest():
        raise BundleError(f"bundle {str(root)!r}: {MANIFEST} was modified after it was written (checksum mismatch)")
    return manifest


def load_bundle(path: str | os.PathLike[str]):
    """Load the Blend stored in a bundle directory."""
    from stacker.base import get_transform_class

    manifest = read_manifest(path)
    cls = get_transform_class(str(manifest.get("kind")))
    return cls.from_state(manifest["state"], Path(path))
