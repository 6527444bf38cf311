"""Camera rules as data: which scanned photos count as a class.

A rule file (TOML, or YAML by suffix) has an optional ``[defaults]`` table and
one ``[classes."<name>"]`` table per class::

    [defaults]
    min_quality = 90                       # applies to classes that set none
    reject_software = ["re:(?i).*photoshop.*"]  # edited files are never kept

    [classes."LG-Nexus-5x"]
    make = ["LGE"]                         # optional; globs
    model = ["Nexus 5X"]                   # required; globs (exact strings match exactly)
    software = ["bullhead*", "HDR+*", ""]  # optional; "" admits a missing tag
    sizes = [[4032, 3024]]                 # optional; either orientation
    min_quality = 92                       # optional
    triples = [[4032, 3024, 95]]           # optional; learned (width, height, quality)

Patterns are shell globs matched case-sensitively against the whole cleaned
EXIF string (:func:`fnmatch.fnmatchcase`), or regular expressions when written
``"re:<regex>"`` (full match).  An absent key places no constraint.  A
scanned row is kept for a class when its model (and make) match that class and
every constraint of the class holds; :meth:`Rules.classify` returns the class or
the reason for rejecting the row.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from holdout.errors import RulesError

__all__ = ["ClassRule", "Rules", "load_rules", "dump_rules", "learn_triples", "BUILTIN_RULES"]

#: Rule files shipped in ``holdout/rules/``, by name.
BUILTIN_RULES: tuple[str, ...] = ("cmi10",)

_CLASS_KEYS = {"make", "model", "software", "sizes", "min_quality", "triples"}
_DEFAULT_KEYS = {"min_quality", "reject_software"}


class _Pattern:
    """A glob, or a ``re:`` regular expression, matched against a whole string."""

    __slots__ = ("text", "_rx")

    def __init__(self, text: str, where: str) -> None:
        if not isinstance(text, str):
            raise RulesError(f"{where}: pattern must be a string, got {text!r}")
        self.text = text
        src = text[3:] if text.startswith("re:") else fnmatch.translate(text)
        try:
            self._rx = re.compile(src, re.DOTALL)
        except re.error as exc:
            raise RulesError(f"{where}: invalid regular expression {text!r}: {exc}") from None

    def match(self, value: str) -> bool:
        return self._rx.fullmatch(value) is not None

    def __repr__(self) -> str:
        return repr(self.text)


def _patterns(value: Any, where: str) -> tuple[_Pattern, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise RulesError(f"{where}: expected a list of patterns, got {value!r}")
    return tuple(_Pattern(v, where) for v in value)


def _int(value: Any, where: str, lo: int = 1, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"
        raise RulesError(f"{where}: expected {bound}, got {value!r}")
    return value


def _tuples(value: Any, n: int, where: str) -> tuple[tuple[int, ...], ...]:
    if not isinstance(value, list):
        raise RulesError(f"{where}: expected a list of {n}-element lists, got {value!r}")
    out = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != n:
            raise RulesError(f"{where}: expected {n} integers per entry, got {item!r}")
        out.append(tuple(_int(v, where, lo=0 if i == 2 else 1, hi=100 if i == 2 else None) for i, v in enumerate(item)))
    return tuple(out)


@dataclass(frozen=True)
class ClassRule:
    """The constraints that admit a photo to one class (see the module docstring)."""

    name: str
    model: tuple[_Pattern, ...]
    make: tuple[_Pattern, ...] = ()
    software: tuple[_Pattern, ...] | None = None
    sizes: tuple[tuple[int, ...], ...] = ()
    min_quality: int | None = None
    triples: tuple[tuple[int, ...], ...] = ()

    def matches_camera(self, make: str, model: str) -> bool:
        """Whether the EXIF make and model name this class's camera."""
        if not any(p.match(model) for p in self.model):
            return False
        return not self.make or any(p.match(make) for p in self.make)

    def check(self, row: Mapping[str, Any]) -> str:
        """The first failed constraint for a row of this camera, or ``""`` when all hold."""
        software = str(row.get("software") or "")
        w, h, q = row.get("width"), row.get("height"), row.get("quality")
        if self.software is not None and not any(p.match(software) for p in self.software):
            return f"{self.name}: software {software!r} not in {[p.text for p in self.software]}"
        if self.sizes:
            if w is None or h is None or _isna(w) or _isna(h):
                return f"{self.name}: size unknown"
            if (int(w), int(h)) not in self.sizes and (int(h), int(w)) not in self.sizes:
                allowed = ", ".join(f"{a}x{b}" for a, b in self.sizes)
                return f"{self.name}: size {int(w)}x{int(h)} not in {allowed}"
        if self.min_quality is not None:
            if q is None or _isna(q):
                return f"{self.name}: JPEG quality unknown (minimum {self.min_quality})"
            if int(q) < self.min_quality:
                return f"{self.name}: JPEG quality {int(q)} < {self.min_quality}"
        if self.triples:
            if any(v is None or _isna(v) for v in (w, h, q)):
                return f"{self.name}: (width, height, quality) unknown"
            t = (int(w), int(h), int(q))  # type: ignore[arg-type]  # not None: checked above
            if t not in self.triples and (t[1], t[0], t[2]) not in self.triples:
                return f"{self.name}: (width, height, quality) {t} not among the {len(self.triples)} learned"
        return ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"model": [p.text for p in self.model]}
        if self.make:
            d["make"] = [p.text for p in self.make]
        if self.software is not None:
            d["software"] = [p.text for p in self.software]
        if self.sizes:
            d["sizes"] = [list(s) for s in self.sizes]
        if self.min_quality is not None:
            d["min_quality"] = self.min_quality
        if self.triples:
            d["triples"] = [list(t) for t in self.triples]
        return d


def _isna(v: Any) -> bool:
    try:
        return bool(v != v) or str(v) == "<NA>"
    except (TypeError, ValueError):
        return str(v) == "<NA>"


@dataclass(frozen=True)
class Rules:
    """A set of class rules plus global software rejections."""

    classes: dict[str, ClassRule]
    reject_software: tuple[_Pattern, ...] = ()
    min_quality: int | None = None
    source: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<rules>") -> Rules:
        """Build and validate rules from the parsed file (see the module docstring for the keys)."""
        if not isinstance(data, Mapping):
            raise RulesError(f"{source}: the top level must be a table")
        unknown = set(data) - {"defaults", "classes", "meta"}
        if unknown:
            raise RulesError(f"{source}: unknown top-level key(s) {sorted(unknown)}; expected defaults, classes")
        defaults = data.get("defaults", {}) or {}
        bad = set(defaults) - _DEFAULT_KEYS
        if bad:
            raise RulesError(f"{source}: [defaults] has unknown key(s) {sorted(bad)}; expected {sorted(_DEFAULT_KEYS)}")
        dq = defaults.get("min_quality")
        dq = None if dq is None else _int(dq, f"{source}: [defaults] min_quality", 0, 100)
        reject = _patterns(defaults.get("reject_software", []), f"{source}: [defaults] reject_software")
        classes_in = data.get("classes")
        if not isinstance(classes_in, Mapping) or not classes_in:
            raise RulesError(f'{source}: no [classes."<name>"] tables')
        classes = {}
        for name, entry in classes_in.items():
            where = f"{source}: class {name!r}"
            if not isinstance(entry, Mapping):
                raise RulesError(f"{where}: expected a table")
            bad = set(entry) - _CLASS_KEYS
            if bad:
                raise RulesError(f"{where}: unknown key(s) {sorted(bad)}; expected {sorted(_CLASS_KEYS)}")
            if "model" not in entry or not entry["model"]:
                raise RulesError(f"{where}: 'model' (a list of Model patterns) is required")
            mq = entry.get("min_quality", dq)
            classes[str(name)] = ClassRule(
                name=str(name),
                model=_patterns(entry["model"], f"{where} model"),
                make=_patterns(entry.get("make", []), f"{where} make"),
                software=_patterns(entry["software"], f"{where} software") if "software" in entry else None,
                sizes=_tuples(entry.get("sizes", []), 2, f"{where} sizes"),
                min_quality=None if mq is None else _int(mq, f"{where} min_quality", 0, 100),
                triples=_tuples(entry.get("triples", []), 3, f"{where} triples"),
            )
        return cls(classes=classes, reject_software=reject, min_quality=dq, source=source)

    def to_dict(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        if self.min_quality is not None:
            defaults["min_quality"] = self.min_quality
        if self.reject_software:
            defaults["reject_software"] = [p.text for p in self.reject_software]
        out: dict[str, Any] = {"defaults": defaults} if defaults else {}
        out["classes"] = {name: rule.to_dict() for name, rule in self.classes.items()}
        return out

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def classify(self, row: Mapping[str, Any]) -> tuple[str | None, str]:
        """Return ``(class, "")`` for a kept row or ``(None, reason)`` for a rejected one."""
        if not row.get("ok", True):
            return None, f"unreadable: {row.get('error') or 'unknown error'}"
        if not row.get("has_exif", True):
            return None, "no EXIF (the camera cannot be proved)"
        make, model = str(row.get("make") or ""), str(row.get("model") or "")
        if not model:
            return None, "no EXIF Model"
        software = str(row.get("software") or "")
        hit = next((p for p in self.reject_software if p.match(software)), None)
        if hit is not None:
            return None, f"edited: software {software!r} matches {hit.text!r}"
        candidates = [r for r in self.classes.values() if r.matches_camera(make, model)]
        if not candidates:
            return None, f"camera {make!r} {model!r} matches no class"
        failures = [r.check(row) for r in candidates]
        passed = [r.name for r, f in zip(candidates, failures) if not f]
        if len(passed) > 1:
            return None, f"ambiguous: matches classes {passed}"
        if passed:
            return passed[0], ""
        return None, "; ".join(failures)

    def with_triples(self, triples: Mapping[str, Iterable[tuple[int, int, int]]]) -> Rules:
        """A copy whose classes in ``triples`` admit only those (width, height, quality)."""
        classes = dict(self.classes)
        for name, ts in triples.items():
            if name not in classes:
                raise RulesError(f"{self.source}: no class {name!r} to learn triples for; has {list(classes)}")
            uniq = sorted({(int(w), int(h), int(q)) for w, h, q in ts})
            classes[name] = replace(classes[name], triples=tuple(uniq))
        return replace(self, classes=classes)


def _builtin_path(name: str) -> Path:
    return Path(__file__).with_name("rules") / f"{name}.toml"


def load_rules(path: str | os.PathLike[str]) -> Rules:
    """Load and validate a rule file (``.toml``, ``.yaml``/``.yml``), or a shipped one by name (``"cmi10"``)."""
    from stacker.config import load_config

    p = _builtin_path(str(path)) if str(path) in BUILTIN_RULES else Path(path)
    if not p.is_file():
        raise RulesError(f"rule file {str(p)!r} not found (shipped rule sets: {', '.join(BUILTIN_RULES)})")
    return Rules.from_dict(load_config(p, "rule file", error=RulesError), source=str(p))


def dump_rules(rules: Rules, path: str | os.PathLike[str]) -> None:
    """Write rules as TOML (atomically)."""
    import tomli_w

    from stacker.files import atomic_write_text

    atomic_write_text(path, tomli_w.dumps(rules.to_dict()))


def learn_triples(manifest, labels: Iterable[str]) -> dict[str, set[tuple[int, int, int]]]:
    """The (width, height, quality) triples seen per class in a scanned reference set.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A scan manifest (rows that failed to decode or lack a quality are skipped).
    labels : iterable of str
        The class of each manifest row, e.g. the training image's folder name.
    """
    out: dict[str, set[tuple[int, int, int]]] = {}
    for (_, row), label in zip(manifest.iterrows(), labels):
        if not row.get("ok", True) or any(_isna(row[c]) for c in ("width", "height", "quality")):
            continue
        out.setdefault(str(label), set()).add((int(row["width"]), int(row["height"]), int(row["quality"])))
    return out
