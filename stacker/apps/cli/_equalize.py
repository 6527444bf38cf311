"""``stacker equalize TABLE [--by manip] [--quota ...] -o OUT [--submission CSV]``.

Forces the predicted class counts to quotas (exactly, or by a greedy rule), per
group, and writes the equalized one-model table and optionally a Kaggle-style CSV.

Quota syntax (``--quota``, ``--lower``, ``--upper``):

* ``264``: that count for every class (in every group);
* ``0.1``: that proportion for every class;
* ``264,264,...``: one value per class, in the table's class order;
* ``HTC-1-M7=264,iPhone-4s=264,...``: one value per named class (all classes).

Without ``--quota`` every class gets an equal share of each group; when the group
size is not a multiple of the number of classes the shares are bounded by their
floor and ceiling and the data decide which classes take the extra rows.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from stacker.apps.cli._common import add_output_options, add_table_options, submission_columns
from stacker.errors import ConfigError
from stacker.files import refuse_overwrite


def parse_quota(text: str | None) -> Any:
    """Parse the quota syntax above into a number, a list or a ``{class: value}`` dict."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        raise ConfigError("empty quota")
    parts = [p.strip() for p in text.split(",")]

    def number(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise ConfigError(
                f"quota value {s!r} is not a number (syntax: 264 | 264,260,... | CLASS=264,...)"
            ) from None
        if not math.isfinite(v) or v < 0:
            raise ConfigError(f"quota value {s!r} must be a finite number, not negative")
        return int(v) if v == int(v) and "." not in s and "e" not in s.lower() else v

    if any("=" in p for p in parts):
        out: dict[str, float] = {}
        for p in parts:
            if "=" not in p:
                raise ConfigError(f"quota item {p!r} lacks '=' (all items must be CLASS=VALUE)")
            name, value = p.rsplit("=", 1)
            name = name.strip()
            if name in out:
                raise ConfigError(f"class {name!r} appears twice in the quota")
            out[name] = number(value.strip())
        return out
    values = [number(p) for p in parts]
    return values[0] if len(values) == 1 else values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "equalize",
        help="force predicted class counts to quotas (exact assignment or greedy)",
        description="Assign each row one class so that every class gets its quota (per group with --by), "
        "maximising the total log-probability. A table with several models is averaged first "
        "(or pick one with --model). Quota syntax: 264 | 0.1 | 264,264,... | CLASS=264,...",
    )
    p.add_argument("table", help="prediction table (parquet, CSV or .npz), usually the Blend's output")
    add_output_options(p, "equalized one-model table (parquet, or CSV by its suffix)", "fname,camera")
    p.add_argument(
        "--by",
        action="append",
        help="meta column to equalize within (repeatable), e.g. manip; 'auto': manip when the table has it "
        "(what stacker predict does by default); default: the whole table",
    )
    p.add_argument("--quota", help="per-class quota: counts or proportions (see above); default equal shares")
    p.add_argument("--lower", help="per-class lower bounds instead of --quota")
    p.add_argument("--upper", help="per-class upper bounds instead of --quota")
    p.add_argument(
        "--method",
        choices=["exact", "iterative", "topk", "sinkhorn"],
        default="exact",
        help="exact assignment (default), the 1st place's iterative greedy rule, global top-k greedy, "
        "or soft Sinkhorn scaling (probabilities only)",
    )
    p.add_argument("--objective", choices=["log", "prob"], default="log", help="exact: maximise total log-prob or prob")
    p.add_argument("--model", help="equalize this model instead of the mean of all models")
    add_table_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from stacker.equalize import GreedyEqualizer, HungarianEqualizer
    from stacker.postprocess import resolve_by
    from stacker.submission import submission_frame, write_frame
    from stacker.table import read_table, write_table
    from stacker.transforms import SinkhornEqualizer

    columns = submission_columns(args)
    refuse_overwrite([args.output, args.submission], [args.table])
    table = read_table(args.table, renormalize=args.renormalize, atol=args.atol)
    # As stacker predict reads --by: 'auto' is manip when the table has it, 'none' no grouping.
    cols = [c for c in (resolve_by(b, table.meta.columns) for b in args.by or []) if c]
    by = None if not cols else (cols[0] if len(cols) == 1 else cols)
    quota, lower, upper = parse_quota(args.quota), parse_quota(args.lower), parse_quota(args.upper)
    if args.method == "exact":
        eq = HungarianEqualizer(
            quota=quota, by=by, lower=lower, upper=upper, objective=args.objective, model=args.model
        )
    elif args.method == "sinkhorn":
        if lower is not None or upper is not None:
            raise ConfigError("--method sinkhorn takes --quota, not --lower/--upper")
        if args.submission:
            raise ConfigError(
                "--method sinkhorn returns probabilities only; use exact or a greedy method for --submission"
            )
        eq = SinkhornEqualizer(quota=quota, by=by, model=args.model)
    else:
        eq = GreedyEqualizer(quota=quota, by=by, lower=lower, upper=upper, method=args.method, model=args.model)

    before = np.argmax(table.probs.mean(axis=1) if args.model is None else table.proba(args.model), axis=1)
    t0 = time.perf_counter()
    out = eq.fit_transform(table)
    elapsed = time.perf_counter() - t0
    after = np.argmax(out.probs[:, 0, :], axis=1)
    changed = int((before != after).sum())
    print(
        f"equalized {len(table)} rows ({args.method}, model {out.models[0]!r}) in {elapsed * 1000:.1f} ms; "
        f"{changed} rows changed class"
    )
    if table.has_labels:
        y = table.y
        known = y >= 0
        print(
            f"accuracy on {int(known.sum())} labelled rows: {np.mean(before[known] == y[known]):.4f} -> "
            f"{np.mean(after[known] == y[known]):.4f}"
        )
    # Checked before anything is written: a refused submission leaves no output table behind.
    frame = submission_frame(table, eq.assignment_, columns=columns, source=args.table) if args.submission else None
    if args.output:
        write_table(out, args.output)
        print(f"wrote {args.output}")
    if frame is not None:
        write_frame(frame, args.submission)
        print(f"wrote {args.submission}: {len(table)} rows")
    return 0
