"""Where a tuning study lives: SQLite (the default), any RDB URL (PostgreSQL, MySQL), or a journal file.

* ``None`` or a path ending in ``.db``/``.sqlite``/``.sqlite3``, or a ``sqlite:///`` URL:
  a local SQLite file.  Every finished trial is committed as it ends, so a study
  killed with ``kill -9`` loses only the trials that were running; heartbeats
  let the next run fail those and retry their parameters once.
* ``postgresql://user:pass@host:port/db`` (or any SQLAlchemy URL): Optuna's RDB
  storage, shared by ``stacker tune`` processes on many machines.  The plain
  ``postgresql://`` scheme uses psycopg2 when it is installed.
* ``journal:PATH`` (or a path ending in ``.journal``/``.log``): Optuna's journal
  file storage, for many processes on a shared file system without a database.

:func:`open_storage` checks reachability first (a TCP connect with a short
timeout, then one query), so a wrong host or port fails within seconds with a
:class:`~stacker.errors.StudyError` instead of hanging in the driver.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stacker.errors import StudyError

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_STORAGE", "CONNECT_TIMEOUT", "resolve_storage", "open_storage", "describe_storage"]

#: The SQLite file used when no storage is given.
DEFAULT_STORAGE = "stacker-tune.db"
#: Seconds allowed for reaching a database server before giving up.
CONNECT_TIMEOUT = 5.0
#: Default heartbeat interval (seconds) of RDB storages; a trial silent for twice this is stale.
HEARTBEAT_INTERVAL = 20

#: Attempts at opening an RDB storage whose tables another worker is creating at the same moment.
_OPEN_ATTEMPTS = 6
_CREATE_RACE = ("already exists", "duplicate key value", "UniqueViolation", "database is locked")
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_JOURNAL_SUFFIXES = (".journal", ".log")
_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def resolve_storage(storage: str | os.PathLike[str] | None) -> tuple[str, str]:
    """``(kind, target)``: kind is ``"rdb"`` (target a SQLAlchemy URL) or ``"journal"`` (a file path)."""
    if storage is None:
        storage = DEFAULT_STORAGE
    text = os.fspath(storage).strip()
    if not text:
        raise StudyError("the storage is empty; give a SQLite path, a database URL or journal:PATH")
    if text.startswith("journal:"):
        path = text[len("journal:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise StudyError(f"storage {text!r}: journal:PATH needs a file path")
        return "journal", str(Path(path))
    if "://" not in text:
        low = text.lower()
        if low.endswith(_JOURNAL_SUFFIXES):
            return "journal", text
        if low.endswith(_SQLITE_SUFFIXES):
            return "rdb", f"sqlite:///{Path(text).resolve()}"
        raise StudyError(
            f"storage {text!r} is neither a URL (sqlite:///, postgresql://...) nor a file ending in "
            f"{', '.join(_SQLITE_SUFFIXES)} (SQLite) or {', '.join(_JOURNAL_SUFFIXES)} (journal), "
            "nor journal:PATH"
        )
    scheme, _, rest = text.partition("://")
    if scheme in ("postgresql", "postgres"):
        # SQLAlchemy's default PostgreSQL driver is psycopg (3); the tune extra installs psycopg2.
        driver = "psycopg2" if _has("psycopg2") else "psycopg"
        text = f"postgresql+{driver}://{rest}"
    return "rdb", text


def describe_storage(storage: str | os.PathLike[str] | None) -> str:
    """The storage for messages, with any password hidden."""
    kind, target = resolve_storage(storage)
    if kind == "journal":
        return f"journal:{target}"
    try:
        from sqlalchemy.engine import make_url

        url = make_url(target)
        if url.get_backend_name() == "sqlite" and url.database:
            return f"SQLite file {url.database}"
        return url.render_as_string(hide_password=True)
    except Exception:
        return target


def _check_server(url: Any, shown: str, timeout: float) -> None:
    host = url.host or "localhost"
    if host.startswith("/"):  # a Unix socket directory: the driver connects directly
        return
    base = url.get_backend_name()
    port = url.port or _DEFAULT_PORTS.get(base)
    if port is None:
        return
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise StudyError(
            f"storage {shown}: cannot reach the database server at {host}:{port} ({reason}) "
            f"within {timeout:g} s; is the server running and the host and port right?"
        ) from None


def _is_journal(path: Path) -> bool:
    """Whether the file's first line is an Optuna journal record (a JSON object with an ``op_code``)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
        record = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "op_code" in record


def open_storage(
    storage: str | os.PathLike[str] | None = None,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``storage`` (see the module docstring), checked to be reachable.

    Parameters
    ----------
    storage : str or path, optional
        SQLite path or URL, database URL, or ``journal:PATH``. Default
        :data:`DEFAULT_STORAGE` in the working directory.
    heartbeat_interval : int or None
        Seconds between heartbeats of running trials (RDB storages only); a
        trial whose process died is failed after two intervals and its
        parameters are retried once.  ``None`` turns heartbeats off.
    connect_timeout : float
        Seconds allowed for reaching a database server.

    Raises
    ------
    StudyError
        The URL is malformed, its driver is missing, or the server or file
        cannot be reached.
    """
    import optuna

    kind, target = resolve_storage(storage)
    shown = describe_storage(storage)
    if kind == "journal":
        path = Path(target)
        if not path.parent.is_dir():
            raise StudyError(f"storage {shown}: the folder {str(path.parent)!r} does not exist")
        if path.exists() and not path.is_file():
            raise StudyError(f"storage {shown}: {str(path)!r} is not a file")
        if path.is_file() and path.stat().st_size and not _is_journal(path):
            # Optuna would append its records to the file, then fail to parse it with a traceback.
            raise StudyError(
                f"storage {shown}: {str(path)!r} is not an Optuna journal (its first line is not a journal "
                "record); give a new file or a journal that stacker tune wrote"
            )
        from optuna.storages.journal import JournalFileBackend

        try:
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        except OSError as exc:
            raise StudyError(f"storage {shown}: cannot open the journal file ({exc})") from None
        except ValueError as exc:  # a record further on that does not parse (JSONDecodeError, UnicodeDecodeError)
            raise StudyError(f"storage {shown}: the journal file is damaged ({exc})") from None

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(target)
    except (ArgumentError, ValueError) as exc:
        raise StudyError(f"storage {shown}: not a valid database URL ({exc})") from None
    backend = url.get_backend_name()
    engine_kwargs: dict[str, Any] = {}
    if backend == "sqlite":
        db = url.database
        if db and db != ":memory:":
            parent = Path(db).resolve().parent
            if not parent.is_dir():
                raise StudyError(f"storage {shown}: the folder {str(parent)!r} does not exist")
            if not os.access(parent, os.W_OK):
                raise StudyError(f"storage {shown}: the folder {str(parent)!r} is not writable")
        # Two processes on one SQLite file wait for each other's write lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        _check_server(url, shown, connect_timeout)
        if backend == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": max(1, int(round(connect_timeout)))}
        elif backend in ("mysql", "mariadb"):
            engine_kwargs["connect_args"] = {"connect_timeout": max(1, int(round(connect_timeout)))}
        engine_kwargs["pool_pre_ping"] = True
    callback = None
    if heartbeat_interval is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    target,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    heartbeat_stale_trial_callback=callback,
                )
        except ModuleNotFoundError as exc:
            raise StudyError(
                f"storage {shown}: the database driver {exc.name!r} is not installed "
                "(pip install 'stacker[tune]' installs psycopg2 for PostgreSQL)"
            ) from None
        except Exception as exc:  # SQLAlchemy's OperationalError and friends: say what the server said
            text = str(exc)
            # Workers started together race to create Optuna's tables in a new database: retry.
            if attempt + 1 < _OPEN_ATTEMPTS and any(s in text for s in _CREATE_RACE):
                time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
                continue
            first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
            raise StudyError(f"storage {shown}: cannot open the study database ({first})") from None
    raise AssertionError("unreachable")  # pragma: no cover
