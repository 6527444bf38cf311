"""Scan a folder of photos into a manifest: EXIF, size, JPEG quality, MD5 and perceptual hashes.

The scanner reads with Pillow (EXIF IFD0 tags, the decoded size and the JPEG
quantization tables); the tests check it against exifread, an independent
parser.  Every file gives exactly one row: a file that is not an image, is
truncated or otherwise fails to decode gets ``ok = False`` and its reason in
``error``, and never stops the scan.

Manifest columns (:data:`MANIFEST_COLUMNS`):

================ ========= ====================================================
``path``         str       the file, as found under the scanned folder
``ok``           bool      decoded completely
``error``        str       why not (``""`` when ``ok``)
``format``       str       Pillow's format name (``JPEG``, ``PNG``, ...)
``has_exif``     bool      the file has an EXIF block with at least one IFD0 tag (XMP alone does not count)
``make``         str       EXIF Make (``""`` when absent); cut at NUL, stripped
``model``        str       EXIF Model, same cleaning
``software``     str       EXIF Software, same cleaning
``orientation``  Int64     EXIF Orientation 1..8 (null when absent)
``width``        Int64     stored pixel width (before any EXIF rotation)
``height``       Int64     stored pixel height
``quality``      Int64     JPEG quality estimated as ImageMagick's ``%Q`` (null for
                           non-JPEG, or 0 when the tables match no IJG quality)
``n_bytes``      int64     file size
``md5``          str       hex MD5 of the file bytes
``phash``        str       64-bit DCT perceptual hash, 16 hex digits
``dhash``        str       64-bit difference hash, 16 hex digits
================ ========= ====================================================
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MANIFEST_COLUMNS",
    "scan_file",
    "scan_files",
    "scan_dir",
    "list_files",
    "estimate_jpeg_quality",
    "phash",
    "dhash",
    "hamming",
]

MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "ok", "error", "format", "has_exif", "make", "model", "software", "orientation",
    "width", "height", "quality", "n_bytes", "md5", "phash", "dhash",
)  # fmt: skip

_HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_TAG_MAKE, _TAG_MODEL, _TAG_SOFTWARE, _TAG_ORIENTATION = 271, 272, 305, 274

# ImageMagick's JPEG quality estimate (coders/jpeg.c, JPEGSetImageQuality):
# for quality q = i + 1, the expected sum of all quantization entries and the
# "hash" qt0[2] + qt0[53] (+ qt1[0] + qt1[63] for colour), natural order.
_HASH_COLOR = (
    1020, 1015, 932, 848, 780, 735, 702, 679, 660, 645, 632, 623, 613, 607, 600, 594, 589, 585, 581, 571,
    555, 542, 529, 514, 494, 474, 457, 439, 424, 410, 397, 386, 373, 364, 351, 341, 334, 324, 317, 309,
    299, 294, 287, 279, 274, 267, 262, 257, 251, 247, 243, 237, 232, 227, 222, 217, 213, 207, 202, 198,
    192, 188, 183, 177, 173, 168, 163, 157, 153, 148, 143, 139, 132, 128, 125, 119, 115, 108, 104, 99,
    94, 90, 84, 79, 74, 70, 64, 59, 55, 49, 45, 40, 34, 30, 25, 20, 15, 11, 6, 4, 0,
)  # fmt: skip
_SUMS_COLOR = (
    32640, 32635, 32266, 31495, 30665, 29804, 29146, 28599, 28104, 27670, 27225, 26725, 26210, 25716,
    25240, 24789, 24373, 23946, 23572, 22846, 21801, 20842, 19949, 19121, 18386, 17651, 16998, 16349,
    15800, 15247, 14783, 14321, 13859, 13535, 13081, 12702, 12423, 12056, 11779, 11513, 11135, 10955,
    10676, 10392, 10208, 9928, 9747, 9564, 9369, 9193, 9017, 8822, 8639, 8458, 8270, 8084, 7896, 7710,
    7527, 7347, 7156, 6977, 6788, 6607, 6422, 6236, 6054, 5867, 5684, 5495, 5305, 5128, 4945, 4751,
    4638, 4442, 4248, 4065, 3888, 3698, 3509, 3326, 3139, 2957, 2775, 2586, 2405, 2216, 2037, 1846,
    1666, 1483, 1297, 1109, 927, 735, 554, 375, 201, 128, 0,
)  # fmt: skip
_HASH_GRAY = (
    510, 505, 422, 380, 355, 338, 326, 318, 311, 305, 300, 297, 293, 291, 288, 286, 284, 283, 281, 280,
    279, 278, 277, 273, 262, 251, 243, 233, 225, 218, 211, 205, 198, 193, 186, 181, 177, 172, 168, 164,
    158, 156, 152, 148, 145, 142, 139, 136, 133, 131, 129, 126, 123, 120, 118, 115, 113, 110, 107, 105,
    102, 100, 97, 94, 92, 89, 87, 83, 81, 79, 76, 74, 70, 68, 66, 63, 61, 57, 55, 52,
    50, 48, 44, 42, 39, 37, 34, 31, 29, 26, 24, 21, 18, 16, 13, 11, 8, 6, 3, 2, 0,
)  # fmt: skip
_SUMS_GRAY = (
    16320, 16315, 15946, 15277, 14655, 14073, 13623, 13230, 12859, 12560, 12240, 11861, 11456, 11081,
    10714, 10360, 10027, 9679, 9368, 9056, 8680, 8331, 7995, 7668, 7376, 7084, 6823, 6562, 6345, 6125,
    5939, 5756, 5571, 5421, 5240, 5086, 4976, 4829, 4719, 4616, 4463, 4393, 4280, 4166, 4092, 3980,
    3909, 3835, 3755, 3688, 3621, 3541, 3467, 3396, 3323, 3247, 3170, 3096, 3021, 2952, 2874, 2804,
    2727, 2657, 2583, 2509, 2437, 2362, 2290, 2211, 2136, 2068, 1996, 1915, 1858, 1773, 1692, 1620,
    1552, 1477, 1398, 1326, 1251, 1179, 1109, 1031, 961, 884, 814, 736, 667, 592, 518, 441, 369, 292,
    221, 151, 86, 64, 0,
)  # fmt: skip


def estimate_jpeg_quality(tables: dict[int, Sequence[int]]) -> int:
    """Estimate the IJG quality of a JPEG from its quantization tables, as ImageMagick's ``%Q``.

    Parameters
    ----------
    tables : dict of int to sequence of 64 ints
        Quantization tables by table id, in natural (row-major) order, as
        Pillow's ``Image.quantization`` gives them.

    Returns
    -------
    int
        1..100, or 0 when the tables are not close to any IJG-scaled table (as
        ImageMagick, which then leaves the quality unset).
    """
    if 0 not in tables:
        return 0
    total = int(sum(int(v) for t in tables.values() for v in t))
    q0 = tables[0]
    if 1 in tables:
        q1 = tables[1]
        qvalue = int(q0[2]) + int(q0[53]) + int(q1[0]) + int(q1[63])
        hashes, sums = _HASH_COLOR, _SUMS_COLOR
    else:
        qvalue = int(q0[2]) + int(q0[53])
        hashes, sums = _HASH_GRAY, _SUMS_GRAY
    for i in range(100):
        if qvalue < hashes[i] and total < sums[i]:
            continue
        # past quality 50 ImageMagick accepts the first row it reaches ("approximate")
        if (qvalue <= hashes[i] and total <= sums[i]) or i >= 50:
            return i + 1
        return 0
    return 0


def _bits_to_hex(bits: np.ndarray) -> str:
    return f"{int(np.packbits(bits.astype(np.uint8).ravel()).view('>u8')[0]):016x}"


def phash(gray: Any) -> str:
    """64-bit DCT perceptual hash of a grey PIL image, as 16 hex digits.

    The image is resized to 32x32 (Lanczos), a 2-D DCT-II taken, and the 8x8
    lowest frequencies compared with their median (the ImageHash convention).
    """
    from PIL import Image
    from scipy.fft import dct

    px = np.asarray(gray.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = dct(dct(px, axis=0), axis=1)[:8, :8]
    return _bits_to_hex(low > np.median(low))


def dhash(gray: Any) -> str:
    """64-bit difference hash of a grey PIL image: 9x8 thumbnail, left < right neighbour bits."""
    from PIL import Image

    px = np.asarray(gray.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    return _bits_to_hex(px[:, 1:] > px[:, :-1])


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray | Sequence[str], b: np.ndarray | Sequence[str] | str) -> np.ndarray:
    """Hamming distances between 64-bit hashes (hex strings or uint64 arrays), broadcasting."""

    def as_u64(x):
        if isinstance(x, str):
            return np.array([int(x, 16)], dtype=np.uint64)
        arr = np.asarray(x)
        if arr.dtype.kind in "OUS":
            return np.array([int(v, 16) for v in arr.ravel()], dtype=np.uint64).reshape(arr.shape)
        return arr.astype(np.uint64)

    x = np.bitwise_xor(as_u64(a), as_u64(b))
    return _POPCOUNT8[x[..., None].view(np.uint8)].sum(axis=-1, dtype=np.int64)


def _clean(value: Any) -> str:
    """EXIF ASCII: bytes or str, cut at the first NUL, whitespace stripped."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = str(value).split("\x00", 1)[0]
    return text.strip()


def _orientation(value: Any) -> int | None:
    try:
        v = int(value)
    except (TypeError, ValueError):
        return None
    return v if 1 <= v <= 8 else None


#: Files larger than this are refused unread (a real camera JPEG is a few MB).
MAX_FILE_BYTES = 256 * 2**20
#: A JPEG must hold at least one byte per this many pixels its header claims (even a flat image needs
#: about one byte per 8x8 block, 64 pixels); a header claiming far more is forged or truncated.
JPEG_PIXELS_PER_BYTE = 1024


def _read_regular(path: str) -> bytes:
    """The bytes of a regular file, opened without blocking or following a link-swap race into a FIFO/device."""
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once instead of hanging
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a device"
                if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode))
                else "not a regular file"
            )
            raise _Refused(f"{kind}: only regular files are scanned")
        if st.st_size > MAX_FILE_BYTES:
            raise _Refused(f"file of {st.st_size} bytes is larger than the {MAX_FILE_BYTES >> 20} MiB limit")
        chunks, n = [], 0
        while chunk := os.read(fd, 1 << 20):
            n += len(chunk)
            if n > MAX_FILE_BYTES:  # grew while read
                raise _Refused(f"file is larger than the {MAX_FILE_BYTES >> 20} MiB limit")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _Refused(Exception):
    """A file the scan does not read (its reason is the row's error)."""


def scan_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Scan one file into a manifest row (a dict with :data:`MANIFEST_COLUMNS`); never raises for bad files."""
    import io

    from PIL import Image, UnidentifiedImageError

    path = str(path)
    row: dict[str, Any] = {c: "" for c in ("error", "format", "make", "model", "software", "md5", "phash", "dhash")}
    row.update(path=path, ok=False, has_exif=False, orientation=None, width=None, height=None, quality=None, n_bytes=0)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # os.walk gave undecodable bytes as surrogates: keep a printable name
        row["path"] = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        row["error"] = "file name is not valid UTF-8"
        return row
    try:
        data = _read_regular(path)
    except _Refused as exc:
        row["error"] = str(exc)
        return row
    except OSError as exc:
        row["error"] = f"cannot read file: {exc.strerror or exc}"
        return row
    row["md5"] = hashlib.md5(data, usedforsecurity=False).hexdigest()  # a content fingerprint, not security
    row["n_bytes"] = len(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on odd EXIF; the row records what matters
        try:
            with Image.open(io.BytesIO(data)) as im:
                row["format"] = im.format or ""
                row["width"], row["height"] = im.size
                try:
                    exif = im.getexif()
                    # Pillow also reads an orientation from XMP; only a real EXIF block counts
                    row["has_exif"] = bool(im.info.get("exif")) and len(exif) > 0
                    row["make"] = _clean(exif.get(_TAG_MAKE))
                    row["model"] = _clean(exif.get(_TAG_MODEL))
                    row["software"] = _clean(exif.get(_TAG_SOFTWARE))
                    row["orientation"] = _orientation(exif.get(_TAG_ORIENTATION))
                except Exception as exc:  # a broken EXIF block leaves the pixels usable
                    row["error"] = f"unreadable EXIF: {exc}"
                if im.format == "JPEG":
                    row["quality"] = estimate_jpeg_quality(getattr(im, "quantization", None) or {})
                    claimed = im.size[0] * im.size[1]
                    if claimed > JPEG_PIXELS_PER_BYTE * len(data):
                        row["error"] = (
                            f"header claims {im.size[0]}x{im.size[1]} pixels but the file holds only "
                            f"{len(data)} bytes (forged or truncated)"
                        )
                        return row
                # decode everything (truncation shows only here); DCT scaling keeps it cheap
                im.draft("L", (64, 64))
                im.load()
                gray = im.convert("L")
                row["phash"], row["dhash"] = phash(gray), dhash(gray)
        except UnidentifiedImageError:
            row["error"] = "not an image (Pillow cannot identify the format)"
            return row
        except Image.DecompressionBombError as exc:
            row["error"] = f"too many pixels: {exc}"
            return row
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            text = str(exc)
            row["error"] = f"truncated image data: {text}" if "truncated" in text else f"cannot decode: {text}"
            return row
    row["ok"] = not row["error"]
    return row


def list_files(root: str | os.PathLike[str], *, follow_links: bool = False) -> list[str]:
    """Every file under ``root`` (recursive, hidden files and folders skipped), sorted.

    Symbolic links are left out unless ``follow_links`` (then only links to files inside ``root``);
    FIFOs, devices and sockets are listed so that the scan reports them, but are never opened for
    reading (:func:`scan_file` refuses anything but a regular file).
    """
    import stat

    root_path = Path(root)
    if not root_path.is_dir():
        from holdout.errors import HoldoutError

        raise HoldoutError(f"{root_path} is not a directory")
    inside = os.path.realpath(root_path)
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root_path):  # never descends into linked folders
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if f.startswith("."):
                continue
            p = os.path.join(dirpath, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(p)
                if not follow_links or os.path.commonpath([inside, target]) != inside:
                    continue
            out.append(p)
    return sorted(out)


def _to_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    for col in ("orientation", "width", "height", "quality"):
        df[col] = df[col].astype("Int64")
    df["ok"] = df["ok"].astype(bool)
    df["has_exif"] = df["has_exif"].astype(bool)
    df["n_bytes"] = df["n_bytes"].astype("int64")
    for col in ("path", "error", "format", "make", "model", "software", "md5", "phash", "dhash"):
        df[col] = df[col].astype(str)
    return df


def scan_files(paths: Iterable[str | os.PathLike[str]], *, jobs: int | None = 1, progress: bool = False):
    """Scan files into a manifest DataFrame, in the order given.

    Parameters
    ----------
    paths : iterable of path
        Files to scan.
    jobs : int or None, default 1
        Worker processes; ``None`` or ``-1`` uses every CPU, 1 scans in this process.
    progress : bool, default False
        Show a tqdm progress bar on stderr.
    """
    from tqdm.auto import tqdm

    paths = [str(p) for p in paths]
    if jobs is None or jobs < 0:
        jobs = os.cpu_count() or 1
    jobs = max(1, min(int(jobs), len(paths) or 1))
    bar = tqdm(total=len(paths), unit="file", disable=not progress, desc="scan")
    rows: list[dict[str, Any]] = []
    if jobs == 1:
        for p in paths:
            rows.append(scan_file(p))
            bar.update()
    else:
        chunk = max(1, min(64, len(paths) // (jobs * 8) or 1))
        from stacker.parallel import watch_parent

        # Workers exit when this process dies, even by kill -9 (see stacker.parallel.watch_parent).
        with ProcessPoolExecutor(max_workers=jobs, initializer=watch_parent, initargs=(os.getpid(),)) as pool:
            for row in pool.map(scan_file, paths, chunksize=chunk):
                rows.append(row)
                bar.update()
    bar.close()
    return _to_frame(rows)


def scan_dir(root: str | os.PathLike[str], *, jobs: int | None = 1, progress: bool = False, follow_links: bool = False):
    """Scan every file under ``root`` (see :func:`list_files` and :func:`scan_files`)."""
    return scan_files(list_files(root, follow_links=follow_links), jobs=jobs, progress=progress)


def write_manifest(df, path: str | os.PathLike[str]) -> None:
    """Write a DataFrame as parquet atomically (temp file, then rename)."""
    from stacker.files import atomic_path

    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_manifest(path: str | os.PathLike[str], required: Sequence[str] = ("path",)):
    """Read a parquet manifest, checking that ``required`` columns are present."""
    import pandas as pd

    from holdout.errors import ManifestError

    p = Path(path)
    if p.is_dir():
        raise ManifestError(f"file {str(p)!r}: is a folder, not a manifest (the parquet file of holdout scan)")
    if not p.is_file():
        raise ManifestError(f"file {str(p)!r}: not found")
    try:
        df = pd.read_parquet(p)
    except Exception as exc:
        raise ManifestError(f"file {str(p)!r}: not a readable parquet file ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ManifestError(f"file {str(p)!r}: missing column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise ManifestError(f"file {str(p)!r}: has no rows")
    for col in ("phash", "dhash"):  # 16 hex digits, or empty for an unreadable file (the dedupe parses them)
        if col in df.columns:
            ok = df[col].map(lambda v: v is None or v == "" or (isinstance(v, str) and _HEX16.fullmatch(v) is not None))
            if not ok.all():
                row = int(np.flatnonzero(~ok.to_numpy())[0])
                raise ManifestError(
                    f"file {str(p)!r}, column {col!r}, row {row}: expected 16 hex digits, got {df[col].iloc[row]!r}"
                )
    return df
