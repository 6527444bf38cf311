"""What every console script shares: one ``error:`` line and exit status 2 for bad input.

Public, so the ``stacker``, ``level1`` and ``holdout`` commands (and a project's own scripts)
report errors the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_command", "checked_type", "EXTRAS"]

T = TypeVar("T")

#: The extra that provides each optional top-level module, for a one-line "pip install" hint.
EXTRAS = {
    "keras": "nn",
    "torch": "nn",
    "optuna": "tune",
    "distributed": "tune",
    "dask": "tune",
    "psycopg2": "tune",
    "timm": "level1",
    "torchvision": "level1",
    "simplejpeg": "level1",
    "safetensors": "level1",
    "PIL": "holdout",
    "cv2": "holdout",
    "matplotlib": "report",
}


def checked_type(convert: Callable[[str], T], ok: Callable[[T], bool], expected: str) -> Callable[[str], T]:
    """An argparse ``type`` that checks the value when the options are parsed.

    ``convert(text)``, kept when ``ok`` accepts it; otherwise argparse's error is
    ``argument --opt: expected {expected}, got 'text'``, not ``invalid <lambda> value``.
    """

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            pass
        else:
            if ok(value):
                return value
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")

    return parse


def run_command(prog: str, args: argparse.Namespace, *, interrupt_hint: str = "") -> int:
    """Run a parsed sub-command; bad input becomes one ``error:`` line and exit status 2.

    Shared by the ``stacker``, ``level1`` and ``holdout`` console scripts, so every
    command reports errors the same way.  Tracebacks are kept for real bugs.
    """
    import os
    import sys

    from stacker.errors import StackerError
    from stacker.threads import passive_openmp

    # Before any command imports torch, XGBoost or LightGBM: idle OpenMP threads sleep instead of
    # spinning (beside two busy processes the default policy doubled a level1 run's CPU time; see stacker.threads).
    passive_openmp()
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`stacker inspect ... | head -1`): stop quietly, as other Unix tools do.
        # stdout is pointed at /dev/null so the interpreter's final flush does not fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except StackerError as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS:
            raise  # a missing core module is a broken installation: keep the traceback
        extra = "level1" if prog == "level1" and top in ("torch", "PIL") else EXTRAS[top]
        print(
            f"{prog} {args.command}: error: this needs the {extra!r} extra (no module named {top!r}): "
            f"pip install 'stacker[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except MemoryError as exc:  # numpy's "Unable to allocate 27.9 GiB" for level1 --crop 100000, say
        print(f"{prog} {args.command}: error: not enough memory: {exc or 'an allocation failed'}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, missing file, read-only file system...
        reason = exc.strerror or str(exc)
        if getattr(exc, "filename", None):
            reason = f"{exc.filename!r}: {reason}"
        print(f"{prog} {args.command}: error: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted{interrupt_hint}", file=sys.stderr)
        return 130
