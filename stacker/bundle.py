"""Saved steps: one checksummed directory format for a Blend, a Chain or any registered step.

Layout::

    <dir>/
      manifest.json     {"format": "stacker-bundle", "format_version": 2, "library_version": ...,
                         "kind": "blend" | "chain" | ...,    the registered kind of the saved step
                         ...,                                 a summary for readers (a Blend's classes,
                                                              models, recipe, member weights, scores)
                         "state": {...},                      the step's get_state (JSON, no pickle)
                         "files": {"<path>": "<sha256>"},     every other file in the directory
                         "checksum": "<sha256>"}              of the canonical manifest without it
      members/<member>/fold<k><ext>(.meta.json)   a Blend's fold models (XGBoost .ubj, LightGBM .txt,
      oof.parquet                                 Keras .keras, JSON) and its out-of-fold table
      00-<kind>/ 01-<kind>/ ...                   a Chain's steps, each laid out the same way

Loading (:func:`load`) refuses, with a :class:`~stacker.errors.BundleError` that names the file and
the field: a manifest that is missing, not JSON (or nested too deep), of another format or a newer
version, or edited after it was written; a listed file that is missing, modified, not a plain file,
a symbolic link, or a path leaving the directory; and state values that cannot be right (member
weights that are not finite, non-negative and summing to 1, fold indices outside the fold count).
Files not listed are never read.  Nothing is unpickled.

A Blend bundle and a one-step chain of it are interchangeable: :meth:`Chain.load` wraps a saved
step in a chain, :meth:`Blend.load` unwraps a one-step chain.  Blend bundles of format 1
(``"stacker-blend"``, member checksums in the state) are still read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from stacker._version import __version__
from stacker.errors import BundleError
from stacker.files import atomic_dir, atomic_write_text, jsonable
from stacker.recipe import MemberSpec
from stacker.table import SCHEMA_VERSION

__all__ = [
    "MANIFEST",
    "FORMAT",
    "FORMAT_VERSION",
    "save",
    "load",
    "from_manifest",
    "read_manifest",
    "check_target",
    "find_blend",
    "is_bundle",
    "write_members",
    "read_members",
    "check_weights",
]

MANIFEST = "manifest.json"
FORMAT = "stacker-bundle"
FORMAT_VERSION = 2
_FORMAT_V1 = "stacker-blend"  # Blend bundles before chains shared the format
_LEGACY_CHAIN = "chain.json"
#: Weights must sum to 1 within this (they are written as float64 sums of multiples of 1/100).
WEIGHT_SUM_TOL = 1e-6


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _canonical(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def _files_under(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel != MANIFEST:
                out[rel] = _sha256(p)
    return dict(sorted(out.items()))


def safe_path(root: Path, rel: Any, field: str) -> Path:
    """``root / rel`` for a relative path that stays inside ``root`` through plain directories only."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise BundleError(f"field {field!r}: {rel!r} is not a relative file path")
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts:
        raise BundleError(f"field {field!r}: {rel!r} points outside the bundle")
    p = root
    for part in parts:
        p = p / part
        if p.is_symlink():
            raise BundleError(f"field {field!r}: {rel!r} is a symbolic link; a bundle holds plain files only")
    return p


def _checked_files(root: Path, files: Any) -> None:
    if not isinstance(files, dict):
        raise BundleError(f"{MANIFEST}: field 'files' is not a mapping of paths to checksums")
    for rel, digest in files.items():
        path = safe_path(root, rel, f"files[{rel!r}]")
        if not path.exists():
            raise BundleError(f"file {rel!r} listed in {MANIFEST} is missing")
        if not path.is_file():
            raise BundleError(f"{rel!r} listed in {MANIFEST} is not a plain file")
        if _sha256(path) != digest:
            raise BundleError(f"file {rel!r} was modified (checksum mismatch)")


def is_bundle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a stacker manifest (any format version)."""
    p = Path(path)
    return (p / MANIFEST).is_file() or (p / _LEGACY_CHAIN).is_file()


def check_target(path: str | os.PathLike[str]) -> Path:
    """``path`` as a place to save a bundle: absent, empty, or a bundle (replaced); else a BundleError.

    Commands call it before they fit, so a wrong output path fails in a second, not after the fit.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise BundleError(f"bundle path {str(target)!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not is_bundle(target):
        raise BundleError(
            f"{str(target)!r} is a non-empty directory that is not a stacker bundle; refusing to "
            "replace it: remove it or choose another path"
        )
    return target


def save(step: Any, path: str | os.PathLike[str]) -> Path:
    """Write a fitted step as a bundle directory at ``path``, atomically.

    An existing bundle is replaced only once the new one is complete; a file, or a non-empty
    directory that is not a bundle, is refused (it may hold someone's work).
    """
    target = check_target(path)
    with atomic_dir(target) as tmp:
        state = step.get_state(tmp)
        try:
            json.dumps(state)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"the state of {type(step).__name__} is not JSON-able: {exc}") from None
        summary = step.manifest_summary(state) if hasattr(step, "manifest_summary") else {}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "kind": type(step).kind,
            **summary,
            "state": state,
            "files": _files_under(tmp),
        }
        manifest["checksum"] = hashlib.sha256(_canonical(manifest)).hexdigest()
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
    return target


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified manifest of a bundle directory (its checksum, and every listed file's)."""
    root = Path(path)
    if root.is_file():
        raise BundleError(f"bundle {str(root)!r} is a file, not a bundle directory (written by stacker fit)")
    if not root.is_dir():
        raise BundleError(f"bundle {str(root)!r} does not exist or is not a directory")
    mpath = root / MANIFEST
    if not mpath.is_file():
        if (root / _LEGACY_CHAIN).is_file():
            raise BundleError(
                f"{str(root)!r} is a chain saved by an older stacker ({_LEGACY_CHAIN} without a "
                "checksum of its own), which is no longer trusted: fit and save the chain again"
            )
        raise BundleError(f"bundle {str(root)!r} has no {MANIFEST}; is it a stacker bundle?")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BundleError(f"bundle {str(root)!r}: {MANIFEST} is not valid JSON ({reason})") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in (FORMAT, _FORMAT_V1):
        raise BundleError(f"bundle {str(root)!r}: {MANIFEST} is not a {FORMAT!r} manifest")
    version = manifest.get("format_version")
    newest = FORMAT_VERSION if manifest["format"] == FORMAT else 1
    if not isinstance(version, int) or isinstance(version, bool) or version > newest or version < 1:
        raise BundleError(
            f"bundle {str(root)!r}: format version {version!r} is not one this stacker ({__version__}) reads "
            f"(1..{FORMAT_VERSION})"
        )
    claimed = manifest.pop("checksum", None)
    if claimed != hashlib.sha256(_canonical(manifest)).hexdigest():
        raise BundleError(f"bundle {str(root)!r}: {MANIFEST} was modified after it was written (checksum mismatch)")
    if not isinstance(manifest.get("state"), dict) or not isinstance(manifest.get("kind"), str):
        raise BundleError(f"bundle {str(root)!r}: {MANIFEST} lacks the fields 'kind' and 'state'")
    try:
        if manifest["format"] == FORMAT:
            _checked_files(root, manifest.get("files"))
    except BundleError as exc:
        raise BundleError(f"bundle {str(root)!r}: {exc}") from None
    return manifest


def load(path: str | os.PathLike[str]) -> Any:
    """The fitted step saved at ``path`` (a Blend, a Chain, ...), every check of the module docstring done."""
    root = Path(path)
    return from_manifest(root, read_manifest(root))


def from_manifest(root: Path, manifest: dict[str, Any]) -> Any:
    """The step of a manifest :func:`read_manifest` verified, rebuilt (for a reader that needs both)."""
    from stacker.base import get_transform_class

    cls = get_transform_class(manifest["kind"])
    try:
        return cls.from_state(manifest["state"], root)
    except BundleError as exc:
        raise BundleError(f"bundle {str(root)!r}: {MANIFEST}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(
            f"bundle {str(root)!r}: {MANIFEST}: the {manifest['kind']} state is incomplete or malformed ({exc!r})"
        ) from None


# ---------------------------------------------------------------------- a Blend's members
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
                entry["files"].append({"fold": f, "model": model_rel.as_posix(), "sidecar": side_rel.as_posix()})
        out.append(entry)
    return out


def _read(directory: Path, rel: Any, digest: Any, field: str) -> bytes:
    path = safe_path(directory, rel, field)
    if not path.is_file():
        raise BundleError(f"field {field!r}: member file {rel!r} is missing")
    data = path.read_bytes()
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:  # format 1 keeps them here
        raise BundleError(f"field {field!r}: member file {rel!r} was modified (checksum mismatch)")
    return data


def read_members(directory: Path, entries: Any, n_folds: int):
    """Members and their ``(model bytes, sidecar)`` fold states; fold indices checked against ``n_folds``."""
    if not isinstance(entries, list):
        raise BundleError("field 'members' is not a list")
    members, states = [], []
    for i, e in enumerate(entries):
        where = f"members[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("files"), list):
            raise BundleError(f"field {where!r} is not a member entry")
        m = MemberSpec(str(e["name"]), str(e["family"]), dict(e["params"]), int(e["seed"]))
        st: list[Any] = [None] * n_folds
        for j, fe in enumerate(e["files"]):
            fold = fe.get("fold") if isinstance(fe, dict) else None
            if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < n_folds:
                raise BundleError(f"field '{where}.files[{j}].fold' is {fold!r}, not a fold index 0..{n_folds - 1}")
            data = _read(directory, fe.get("model"), fe.get("model_sha256"), f"{where}.files[{j}].model")
            side_raw = _read(directory, fe.get("sidecar"), fe.get("sidecar_sha256"), f"{where}.files[{j}].sidecar")
            try:
                side = json.loads(side_raw)
            except (ValueError, RecursionError):
                raise BundleError(f"field '{where}.files[{j}].sidecar': {fe['sidecar']!r} is not valid JSON") from None
            if not isinstance(side, dict) or side.get("family") != m.family:
                raise BundleError(f"field '{where}.files[{j}].sidecar': {fe['sidecar']!r} is not a {m.family!r} model")
            st[fold] = (data, side)
        members.append(m)
        states.append(st)
    return members, states


def check_weights(weights: Any, n_members: int) -> np.ndarray:
    """Member weights as stored: ``n_members`` finite, non-negative numbers summing to 1."""
    if not isinstance(weights, list) or len(weights) != n_members:
        raise BundleError(
            f"field 'weights' must list one weight per member ({n_members}), got "
            f"{len(weights) if isinstance(weights, list) else type(weights).__name__}"
        )
    bad = [
        i
        for i, w in enumerate(weights)
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0
    ]
    if bad:
        raise BundleError(
            f"field 'weights[{bad[0]}]' is {weights[bad[0]]!r}; member weights must be finite and non-negative"
        )
    w = np.asarray(weights, dtype=np.float64)
    if abs(w.sum() - 1.0) > WEIGHT_SUM_TOL:
        raise BundleError(f"field 'weights' sums to {w.sum():.9g}; member weights must sum to 1")
    return w


def blend_state(blend: Any, directory: Path) -> dict[str, Any]:
    """A fitted Blend's state: parameters, layout, weights, members (written as native files), scores, plan."""
    from stacker.table import write_table

    params = blend.get_params(deep=False)
    params.pop("on_fold", None)
    params["recipe"] = blend.recipe_.to_dict()
    oof = None
    if hasattr(blend, "oof_"):  # the level-2 out-of-fold predictions, for reports and later calibration
        write_table(blend.oof_, Path(directory) / "oof.parquet")
        oof = {"path": "oof.parquet"}
    return {
        "params": jsonable(params),
        "classes": list(blend.feature_spec_.classes),
        "labels": jsonable(np.asarray(blend.classes_).tolist()),
        "models": list(blend.models_),
        "features": blend.feature_spec_.to_dict(),
        "weights": blend.weights_.tolist(),
        "members": write_members(Path(directory), blend.members_, blend.weights_, blend._states),
        "scores": jsonable(blend.scores_),
        "level1_correlation": blend.level1_correlation_.tolist() if hasattr(blend, "level1_correlation_") else None,
        "oof": oof,
        "plan": jsonable(getattr(blend, "plan_", None)),
        # What the Blend was fitted on, for reports (a path, or e.g. "array X").
        "data": {"source": blend.oof_.source, "rows": len(blend.oof_)} if oof else None,
    }


def blend_from_state(cls: type, state: dict[str, Any], directory: Path) -> Any:
    """The fitted Blend of :func:`blend_state`, its values checked (see the module docstring)."""
    from stacker.features import FeatureSpec
    from stacker.recipe import Recipe

    params = dict(state["params"])
    n_folds = params.get("n_folds")
    if not isinstance(n_folds, int) or isinstance(n_folds, bool) or not 2 <= n_folds <= 1000:
        raise BundleError(f"field 'params.n_folds' is {n_folds!r}, not a fold count 2..1000")
    blend = cls(**params)
    blend.recipe_ = Recipe.from_dict(params["recipe"])
    tta = params.get("tta_power")
    blend.tta_power_ = tta if tta is not None else blend.recipe_.tta_power
    names = tuple(state["classes"])
    labels = state.get("labels", list(names))
    if not isinstance(labels, list) or len(labels) != len(names):
        raise BundleError(f"field 'labels' does not match the {len(names)} classes")
    blend.classes_ = np.asarray(labels, dtype=object if all(isinstance(v, str) for v in labels) else None)
    blend.models_ = tuple(state["models"])
    blend.feature_spec_ = FeatureSpec.from_dict(state["features"])
    blend.members_, blend._states = read_members(Path(directory), state["members"], n_folds)
    blend.weights_ = check_weights(state["weights"], len(blend.members_))
    for mi in np.flatnonzero(blend.weights_ > 0):
        if not any(s is not None for s in blend._states[mi]):
            raise BundleError(
                f"field 'members[{mi}]': member {blend.members_[mi].name!r} has weight but no model files"
            )
    blend.scores_ = state.get("scores", {})
    blend.plan_ = state.get("plan") or {}
    tl = params.get("time_limit")
    blend.time_limit_ = blend.plan_.get("time_limit", tl if tl is not None else blend.recipe_.time_limit)
    if state.get("level1_correlation") is not None:
        blend.level1_correlation_ = np.asarray(state["level1_correlation"], dtype=np.float64)
    if blend.feature_spec_.classes != names or blend.feature_spec_.models != blend.models_:
        raise BundleError("fields 'classes'/'models' disagree with the feature layout")
    blend._estimators = {}
    return blend


def blend_summary(state: dict[str, Any]) -> dict[str, Any]:
    """What a Blend's manifest shows at its top, for readers that do not rebuild the Blend (reports)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "classes": state["classes"],
        "models": state["models"],
        "feature_columns": state["features"]["names"],
        "recipe": state["params"]["recipe"],
        "member_weights": {m["name"]: m["weight"] for m in state["members"]},
        "scores": state["scores"]["blend"],
    }


def find_blend(root: Path, manifest: dict[str, Any]) -> tuple[dict[str, Any], Path, list[str], int | None]:
    """The Blend's state and directory in a Blend bundle or a chain; the chain's step kinds; the Blend's index.

    ``manifest`` is :func:`read_manifest`'s (verified).  For readers that do not rebuild the Blend (reports).
    """
    kind = manifest.get("kind")
    if kind == "blend":
        return manifest.get("state", {}), root, ["blend"], None
    if kind == "chain":
        steps = manifest.get("state", {}).get("steps") or []
        kinds = [str(step.get("kind")) for step in steps if isinstance(step, dict)]
        for i, step in enumerate(steps):
            if isinstance(step, dict) and step.get("kind") == "blend":
                return step.get("state", {}), safe_path(root, step.get("dir"), f"steps[{i}].dir"), kinds, i
    raise BundleError(
        f"bundle {str(root)!r} holds a {kind} with no Blend step (a Blend bundle or a chain with a Blend is needed)"
    )


def oof_path(root: Path, state: dict[str, Any]) -> Path | None:
    """The bundle's out-of-fold table (already verified by :func:`read_manifest`), if it has one."""
    entry = state.get("oof")
    if not isinstance(entry, dict):
        return None
    path = safe_path(root, entry.get("path"), "oof.path")
    if "sha256" in entry:  # format 1
        _read(root, entry.get("path"), entry["sha256"], "oof.path")
    return path if path.is_file() else None
