"""Writing files safely: atomic writes (a temporary file or directory beside the target, then
rename) and JSON-able values.  Public: the satellites (``level1``, ``holdout``) write through it too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_dir", "atomic_write_text", "check_output_file", "jsonable", "refuse_overwrite"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _prefix(target: Path) -> str:
    # The writer's pid is in the name, so a later write can tell a dead writer's leftovers from a live one's.
    return f".{target.name}.{os.getpid()}."


#: The names this module gives its temporary files/directories (``mkstemp``/``mkdtemp`` add 8 characters)
#: and the directories it moves aside: ``.<name>.<pid>.<8>.tmp`` and ``.<name>.old-<pid>``.
_LEFTOVER = re.compile(r"\..+\.(?:(\d+)\.[a-z0-9_]{8}\.tmp|old-(\d+))")
#: Directories already cleaned by this process: the scan runs once per directory, not on every write
#: (a folder of thousands of outputs would otherwise be listed once per file).
_CLEANED: set[str] = set()


def _clean_leftovers(target: Path) -> None:
    """Remove the temporary files and directories that killed writers left beside ``target``."""
    where = os.path.abspath(target.parent)
    if where in _CLEANED:
        return
    _CLEANED.add(where)
    try:
        entries = list(os.scandir(where))
    except OSError:
        return
    for entry in entries:
        m = _LEFTOVER.fullmatch(entry.name)
        if m is None or _alive(int(m.group(1) or m.group(2))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched, so a
    crash mid-write never leaves a half-written output behind; what a killed writer
    left is removed at the next write of the same path.  The file gets the
    permissions the umask gives a new file (``mkstemp`` alone would make it 0600).
    """
    if not str(path).strip():
        raise OSError(errno.EINVAL, "the output path is empty", "")
    target = Path(path)
    if target.is_dir():
        # Else the rename fails naming the hidden temporary file, not the output.
        raise IsADirectoryError(errno.EISDIR, "is a folder; give the name of a file to write", str(target))
    if target.exists() and not target.is_file():
        # Renaming over /dev/full or a FIFO would replace the node itself with a regular file.
        raise OSError(errno.EINVAL, "not a regular file; refusing to replace it", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(target)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; move it onto ``path`` on success.

    An existing directory at ``path`` is replaced only after the new one is complete.
    """
    if not str(path).strip():
        raise OSError(errno.EINVAL, "the output path is empty", "")
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder; give a folder to write", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists")
    _clean_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def refuse_overwrite(
    outputs: Iterable[str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str]],
    folders: Mapping[str | os.PathLike[str], str] | None = None,
) -> None:
    """A ConfigError when writing ``outputs`` would replace or fill what the command reads.

    Checked before anything is read or written.  An output (a file, or a folder that is replaced
    or filled: a bundle, a run, a folder of images) conflicts with an input (a file or a folder)
    when it is that input or holds it.  ``folders`` (path -> what it is, e.g. ``"bundle"``) are
    inputs that the command owns the contents of: nothing may be written inside them either.
    Two outputs conflict when one is, or holds, the other.
    """
    from stacker.errors import ConfigError

    def real(p: str | os.PathLike[str]) -> str:
        return os.path.realpath(os.fspath(p))

    def within(child: str, parent: str) -> bool:
        return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)

    owned = {real(k): (os.fspath(k), v) for k, v in (folders or {}).items()}
    reads = [(real(i), os.fspath(i)) for i in inputs] + [(r, k) for r, (k, _) in owned.items()]
    written: list[tuple[str, str]] = []
    for out in (os.fspath(o) for o in outputs if o is not None and os.fspath(o) != ""):
        r = real(out)
        for ri, given in reads:
            if r == ri:
                raise ConfigError(f"output {out!r} is also an input; write it somewhere else")
            if within(ri, r):
                raise ConfigError(f"output {out!r} holds the input {given!r}; write it somewhere else")
        for ro, (given, what) in owned.items():
            if within(r, ro):
                raise ConfigError(f"output {out!r} is inside the {what} {given!r} it reads; write it somewhere else")
        for rw, other in written:
            if within(r, rw) or within(rw, r):
                same = "the same file" if r == rw else "one inside the other"
                raise ConfigError(f"outputs {other!r} and {out!r} are {same}; write them apart")
        written.append((r, out))


def check_output_file(path: str | os.PathLike[str] | None, option: str) -> None:
    """A ConfigError naming ``option`` when the file it gives cannot be written: empty, or a folder.

    For outputs written after a long step (or after other outputs), so that they fail first.
    """
    from stacker.errors import ConfigError

    if path is None:
        return
    if not os.fspath(path).strip():
        raise ConfigError(f"{option} is empty; give the name of a file to write")
    if os.path.isdir(path):
        raise ConfigError(f"{option} {os.fspath(path)!r} is a folder; give the name of a file to write")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def jsonable(value: Any) -> Any:
    """``value`` with NumPy arrays and scalars turned into lists and Python numbers, keys into str."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
