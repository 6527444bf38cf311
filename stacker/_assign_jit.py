"""The compiled kernels: the code of :mod:`stacker._assign_kernels`, compiled by numba in a namespace of its own.

numba resolves a jitted function's calls through its module's globals, so its helpers must be
jitted objects there.  Rather than rebinding the helpers of :mod:`stacker._assign_kernels` (after
which its interpreted kernels would call compiled helpers), the same source is executed once in
this module and compiled here; the interpreted module is never changed.  The functions keep the
source file's name and lines, and this module is a real module, so numba's on-disk cache works.
Imported only when the compiled kernels are first asked for (numba is optional).
"""

from __future__ import annotations

from pathlib import Path

import numba

# The source is read, not imported: this module depends on the file alone (no import circle).
_SOURCE = Path(__file__).with_name("_assign_kernels.py")
exec(compile(_SOURCE.read_text(encoding="utf-8"), str(_SOURCE), "exec"), globals())  # noqa: S102 - our own source

_jit = numba.njit(cache=True, nogil=True)
_g = globals()  # the names the exec above defined
# Helpers first, so the compiled callers below find compiled helpers in this module's globals.
for _name in ("_select", "_store", "_recompute", "_add_newcomer", "_weights", "_value"):
    _g[_name] = _jit(_g[_name])

KERNELS = _g["_Namespace"](
    **{
        name: _jit(_g[name])
        for name in (
            "ssp",
            "bulk_argmax",
            "certificate_violations",
            "has_bad_rows",
            "refine_prices",
            "score_violations",
        )
    },
    gather_contested=_g["gather_contested"],  # plain NumPy: calls no loop
    margin_is_ratio=_g["margin_is_ratio"],
)
