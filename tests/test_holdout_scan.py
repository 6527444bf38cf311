"""Scanner, rules, filter, build and CLI of the holdout package, on the real EXIF samples.

The scanner reads with Pillow; exifread is the independent reader here, and OpenCV
decodes the pixels independently to check sizes.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from holdout.build import build_holdout
from holdout.cli import main
from holdout.errors import ManifestError, RulesError
from holdout.filter import filter_manifest, near_duplicate_pairs
from holdout.rules import Rules, learn_triples, load_rules
from holdout.scan import MANIFEST_COLUMNS, estimate_jpeg_quality, hamming, scan_dir, scan_file, scan_files
from stacker.errors import ConfigError, StackerError


@pytest.fixture(scope="module")
def manifest(exif_samples_dir):
    return scan_dir(exif_samples_dir, jobs=2)


def _exifread_str(tags, key):
    v = tags.get(key)
    if v is None:
        return ""
    return str(v.printable if hasattr(v, "printable") else v).split("\x00", 1)[0].strip()


@pytest.mark.shared_data
def test_scan_agrees_with_exifread_and_opencv(manifest, exif_samples_dir):
    import cv2
    import exifread

    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    jpgs = manifest[manifest["path"].str.endswith(".jpg")]
    assert len(jpgs) == 57  # every JPEG has a row
    readable = jpgs[jpgs["ok"]]
    assert len(readable) == 56
    n_with_model = 0
    for row in readable.itertuples():
        with open(row.path, "rb") as fh:
            tags = exifread.process_file(fh, details=False)
        assert row.make == _exifread_str(tags, "Image Make"), row.path
        assert row.model == _exifread_str(tags, "Image Model"), row.path
        assert row.software == _exifread_str(tags, "Image Software"), row.path
        n_with_model += bool(row.model)
        img = cv2.imread(row.path, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        assert (row.width, row.height) == (img.shape[1], img.shape[0]), row.path
        assert len(row.md5) == 32 and len(row.phash) == 16 and len(row.dhash) == 16
        assert 1 <= row.quality <= 100
    assert n_with_model >= 40
    # orientation 6 on the two Canon HDR shots, as exifread reads it
    canon = manifest[manifest["path"].str.contains("canon_hdr")]
    assert (canon["orientation"] == 6).all()


@pytest.mark.shared_data
def test_bad_files_are_rows_with_reasons(manifest):
    bad = manifest[~manifest["ok"]].set_index(manifest[~manifest["ok"]]["path"].map(lambda p: Path(p).name))
    assert bad.loc["HMD_Nokia_8.3_5G.jpg", "error"].startswith("truncated image data")
    # the EXIF of the truncated photo is still recorded
    assert bad.loc["HMD_Nokia_8.3_5G.jpg", "model"] == "Nokia 8.3 5G"
    readmes = bad[bad.index.str.startswith("README")]
    assert len(readmes) == 6 and (readmes["error"] == "not an image (Pillow cannot identify the format)").all()
    assert readmes["width"].isna().all() and readmes["quality"].isna().all()
    invalid = manifest[manifest["path"].str.contains("/invalid/") & manifest["path"].str.endswith(".jpg")]
    assert len(invalid) == 7 and invalid["ok"].all() and not invalid["has_exif"].any()


def test_unreadable_and_garbage_files(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    row = scan_file(junk)
    assert not row["ok"] and row["error"]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert scan_file(empty)["error"] == "not an image (Pillow cannot identify the format)"
    assert scan_file(tmp_path / "missing.jpg")["error"].startswith("cannot read file")
    df = scan_files([junk, empty], jobs=2)
    assert len(df) == 2 and not df["ok"].any()


@pytest.mark.parametrize("q", [50, 70, 75, 90, 95, 100])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_quality_estimate_reads_back_pillow_quality(q, mode):
    rng = np.random.default_rng(q)
    img = Image.fromarray((rng.random((48, 40, 3)) * 255).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=q)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert estimate_jpeg_quality(im.quantization) == q
    assert estimate_jpeg_quality({}) == 0
    # the coarsest 8-bit tables are quality 1; coarser 16-bit ones match no row (left unset, as ImageMagick)
    assert estimate_jpeg_quality({0: [255] * 64, 1: [255] * 64}) == 1
    assert estimate_jpeg_quality({0: [1000] * 64, 1: [1000] * 64}) == 0


def test_hashes_and_near_duplicate_pairs(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((200, 300, 3)) * 255).astype(np.uint8)
    base = np.asarray(Image.fromarray(base).resize((30, 20)).resize((300, 200), Image.BICUBIC))
    Image.fromarray(base).save(tmp_path / "a.png")
    Image.fromarray(base).save(tmp_path / "b.jpg", quality=80)  # same picture, recompressed
    other = (rng.random((200, 300, 3)) * 255).astype(np.uint8)
    other = np.asarray(Image.fromarray(other).resize((30, 20)).resize((300, 200), Image.BICUBIC))
    Image.fromarray(other).save(tmp_path / "c.png")
    df = scan_dir(tmp_path)
    d = hamming(df["phash"].to_numpy(), df["phash"].to_numpy()[0])
    assert d[1] <= 4 and d[2] >= 16
    # pigeonhole search finds exactly the brute-force pairs
    h = rng.integers(0, 2**63, size=300, dtype=np.int64).astype(np.uint64)
    h[50] = h[10] ^ np.uint64(0b1011)  # distance 3
    h[200] = h[10] ^ np.uint64(1 << 63)  # distance 1
    i, j, dist = near_duplicate_pairs(h, 4)
    full = hamming(h[:, None], h[None, :])
    bi, bj = np.nonzero(np.triu(full <= 4, k=1))
    assert sorted(zip(i, j)) == sorted(zip(bi, bj))
    assert {(10, 50), (10, 200), (50, 200)} <= set(zip(i.tolist(), j.tolist()))


RULES_TOML = """
[defaults]
reject_software = ["GIMP*"]

[classes."Nikon-P6000"]
make = ["NIKON"]
model = ["COOLPIX P6000"]
software = ["Nikon Transfer*"]
sizes = [[480, 640]]
min_quality = 80

[classes."iPhone-6"]
model = ["iPhone 6"]
software = ["re:[0-9]+(\\\\.[0-9]+){1,2}"]
sizes = [[3264, 2448]]

[classes."Canon-SX60"]
model = ["Canon PowerShot SX60*"]
sizes = [[2048, 1536]]
"""


@pytest.mark.shared_data
def test_rule_file_selects_exactly_the_right_files(manifest, tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(RULES_TOML)
    rules = load_rules(path)
    out = filter_manifest(manifest, rules)
    kept = out[out["kept"]]
    names = {Path(p).relative_to(Path(p).parents[1]).as_posix() for p in kept["path"]}
    # Nikon: the 7 GPS shots at quality >= 80 (DSCN0010 is 75, DSCN0012 73, rejected by quality);
    # iPhone: the HDR pair is one picture (pHash distance 4), only the first path stays;
    # Canon: the HDR pair differs by 12 bits, so both stay.
    expected = {f"gps/DSCN00{n}.jpg" for n in (21, 25, 27, 29, 38, 40, 42)}
    expected |= {"hdr/iphone_hdr_NO.jpg", "hdr/canon_hdr_NO.jpg", "hdr/canon_hdr_YES.jpg"}
    assert names == expected
    reason = out.set_index(out["path"].map(lambda p: Path(p).name))["reason"]
    assert reason["DSCN0010.jpg"] == "Nikon-P6000: JPEG quality 75 < 80"
    assert (
        reason["iphone_hdr_YES.jpg"].startswith("near duplicate of ")
        and "iphone_hdr_NO.jpg" in reason["iphone_hdr_YES.jpg"]
    )
    assert reason["Canon_40D.jpg"].startswith("edited: software 'GIMP 2.4.5'")
    assert reason["image01551.jpg"] == "no EXIF (the camera cannot be proved)"
    assert reason["HMD_Nokia_8.3_5G.jpg"].startswith("unreadable: truncated image data")
    assert reason["Sony_HDR-HC3.jpg"] == "camera 'SONY' 'HDR-HC3' matches no class"
    assert out.loc[out["kept"], "label"].value_counts().to_dict() == {"Nikon-P6000": 7, "Canon-SX60": 2, "iPhone-6": 1}
    assert out.loc[~out["kept"], "label"].isna().all()
    # without near-duplicate removal both iPhone shots stay
    assert filter_manifest(manifest, rules, phash_threshold=None)["kept"].sum() == 11


@pytest.mark.shared_data
def test_exact_duplicates_and_learned_triples(exif_samples_dir, tmp_path):
    for name in ("DSCN0025.jpg", "DSCN0027.jpg"):
        shutil.copy(exif_samples_dir / "gps" / name, tmp_path / name)
    shutil.copy(exif_samples_dir / "gps" / "DSCN0025.jpg", tmp_path / "z_copy.jpg")
    df = scan_dir(tmp_path)
    rules = Rules.from_dict({"classes": {"P6000": {"model": ["COOLPIX P6000"]}}})
    out = filter_manifest(df, rules).set_index("path")
    assert out.loc[str(tmp_path / "z_copy.jpg"), "reason"] == f"exact duplicate of {tmp_path / 'DSCN0025.jpg'}"
    learned = learn_triples(df.iloc[:1], ["P6000"])
    assert learned == {"P6000": {(640, 480, 91)}}
    strict = rules.with_triples(learned)
    out2 = filter_manifest(df, strict).set_index("path")
    assert out2["kept"].sum() == 1
    assert "(640, 480, 88) not among the 1 learned" in out2.loc[str(tmp_path / "DSCN0027.jpg"), "reason"]


def test_shipped_rules_and_bad_rule_files(tmp_path):
    rules = load_rules("cmi10")
    assert rules.class_names == [
        "HTC-1-M7", "iPhone-4s", "iPhone-6", "LG-Nexus-5x", "Motorola-Droid-Maxx", "Motorola-Nexus-6",
        "Motorola-X", "Samsung-Galaxy-Note3", "Samsung-Galaxy-S4", "Sony-NEX-7",
    ]  # fmt: skip
    row = dict(ok=True, has_exif=True, make="LGE", model="Nexus 5X", software="HDR+ 1.0.199571065z",
               width=3024, height=4032, quality=95)  # fmt: skip
    assert rules.classify(row) == ("LG-Nexus-5x", "")
    assert rules.classify({**row, "software": "Adobe Photoshop CC"})[1].startswith("edited")
    assert rules.classify({**row, "width": 4000})[1] == "LG-Nexus-5x: size 4000x4032 not in 4032x3024"
    assert rules.classify({**row, "quality": 80})[1] == "LG-Nexus-5x: JPEG quality 80 < 90"
    htc = dict(row, make="HTC", model="HTC6500LVW", software="", width=2688, height=1520)
    assert rules.classify(htc) == ("HTC-1-M7", "")
    ip = dict(row, make="Apple", model="iPhone 4S", software="9.3.5", width=3264, height=2448)
    assert rules.classify(ip) == ("iPhone-4s", "")
    assert rules.classify({**ip, "software": "Camera+ 9"})[1].startswith("iPhone-4s: software")
    assert rules.classify({**ip, "model": "iPhone 6 Plus"})[1] == "camera 'Apple' 'iPhone 6 Plus' matches no class"

    bad = tmp_path / "bad.toml"
    for text, match in [
        ("[classes.A]\nmodel = ['x']\nsize = [[1, 2]]\n", "unknown key"),
        ("[classes.A]\nsoftware = ['x']\n", "'model'"),
        ("[classes.A]\nmodel = ['re:(']\n", "invalid regular expression"),
        ("[classes.A]\nmodel = ['x']\nsizes = [[1]]\n", "2 integers"),
        ("[classes.A]\nmodel = ['x']\nmin_quality = 101\n", "min_quality"),
        ("[defaults]\nmin_quality = 90\n", "no \\[classes"),
        ("[classes.A\n", "cannot be parsed"),
    ]:
        bad.write_text(text)
        with pytest.raises(RulesError, match=match):
            load_rules(bad)
    assert issubclass(RulesError, ConfigError) and issubclass(RulesError, StackerError)
    with pytest.raises(RulesError, match="not found"):
        load_rules(tmp_path / "missing.toml")
    (tmp_path / "r.yaml").write_text("classes:\n  A:\n    model: ['x*']\n    sizes: [[2, 1]]\n")
    assert load_rules(tmp_path / "r.yaml").classify(dict(model="xy", width=1, height=2)) == ("A", "")


def _kept_frame(n_per_class=(12, 9, 15)):
    rows = []
    for c, n in zip("ABC", n_per_class):
        rows += [{"path": f"/ext/{c}/{i:03d}.jpg", "kept": True, "label": c} for i in range(n)]
    rows.append({"path": "/ext/rejected.jpg", "kept": False, "label": None})
    return pd.DataFrame(rows)


def test_build_balanced_folds_and_seed():
    kept = _kept_frame()
    out = build_holdout(kept, 8, seed=3, n_folds=4)
    assert list(out.columns) == ["path", "label", "fold", "source"]
    assert out["label"].value_counts().to_dict() == {"A": 8, "B": 8, "C": 8}
    assert (out.groupby(["label", "fold"]).size() == 2).all()
    assert (out["source"] == "external").all() and not out["path"].duplicated().any()
    pd.testing.assert_frame_equal(out, build_holdout(kept, 8, seed=3, n_folds=4))
    assert not out.equals(build_holdout(kept, 8, seed=4, n_folds=4))
    with pytest.raises(ManifestError, match=r"fewer than 10 images for 1 class\(es\) \(B: 9\)"):
        build_holdout(kept, 10)
    assert len(build_holdout(kept, 10, allow_short=True)) == 29
    train = pd.DataFrame({"path": [f"/train/{c}/{i}.jpg" for c in "ABC" for i in range(5)],
                          "label": [c for c in "ABC" for _ in range(5)]})  # fmt: skip
    mixed = build_holdout(kept, 4, seed=0, train=train, train_per_class=2, manip_fraction=0.5)
    assert mixed.groupby(["label", "source"]).size().to_dict() == {
        (c, s): n for c in "ABC" for s, n in (("external", 4), ("train", 2))
    }
    assert set(mixed["manip"]) <= {0, 1} and ((mixed["manip"] == 1) == (mixed["manip_kind"] != "")).all()
    with pytest.raises(ManifestError, match="label"):
        build_holdout(pd.DataFrame({"path": ["a"]}), 1)


@pytest.mark.shared_data
def test_cli_end_to_end(exif_samples_dir, cmi_crops_dir, tmp_path, capsys):
    m, k, h = tmp_path / "m.parquet", tmp_path / "k.parquet", tmp_path / "h.parquet"
    assert main(["scan", str(exif_samples_dir / "gps"), "-o", str(m), "-j", "1", "-q"]) == 0
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES_TOML)
    assert main(["filter", str(m), "--rules", str(rules), "-o", str(k)]) == 0
    assert "7 kept of 10 files" in capsys.readouterr().out
    assert main(["build", str(k), "--per-class", "4", "--folds", "2", "--seed", "1", "-o", str(h)]) == 0
    hold = pd.read_parquet(h)
    assert len(hold) == 4 and set(hold["fold"]) == {0, 1} and set(hold["label"]) == {"Nikon-P6000"}
    assert main(["build", str(k), "--per-class", "8", "-o", str(h)]) == 2
    assert "fewer than 8 images" in capsys.readouterr().err
    learned = tmp_path / "learned.toml"
    assert main(["learn", str(m), "--rules", str(rules), "--label-column", "model", "-o", str(learned)]) == 2
    crops = sorted(cmi_crops_dir.glob("*.jpg"))[:2]
    out = tmp_path / "man"
    argv = ["manipulate", *map(str, crops), "-o", str(out), "--size", "256", "--random", "--seed", "5"]
    assert main(argv) == 0
    man = pd.read_parquet(out / "manifest.parquet")
    assert len(man) == 2 and all(Image.open(p).size == (256, 256) for p in man["path"])
    assert main(["manipulate", *map(str, crops), "-o", str(out), "--kinds", "jpg70,gamma0.8", "--size", "none"]) == 0
    assert Image.open(out / f"{crops[0].stem}__gamma0.8.png").size == (512, 512)
    capsys.readouterr()
    assert main(["manipulate", str(crops[0]), "-o", str(out), "--kinds", "blur"]) == 2
    assert "unknown manipulation 'blur'" in capsys.readouterr().err
    assert main(["manipulate", str(crops[0]), "-o", str(out)]) == 2  # 512 crop cannot give 512 output
    assert "needs a centre crop of 1024x1024" in capsys.readouterr().err
    assert main(["filter", str(tmp_path / "nope.parquet"), "--rules", "cmi10", "-o", str(k)]) == 2
    assert main(["scan", str(tmp_path / "nodir"), "-o", str(m)]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0


# ---------------------------------------------------------------------- hostile folders
def _jpeg(path, size=(16, 16)):
    from PIL import Image

    Image.new("RGB", size, (120, 80, 40)).save(path, "JPEG", quality=90)
    return path


def test_scan_never_opens_fifos_devices_or_links_out_of_the_tree(tmp_path):
    """A FIFO named *.jpg hung the scan forever; a link to /dev/zero read without end."""
    import threading

    from holdout.scan import list_files, scan_dir, scan_file

    root = tmp_path / "photos"
    root.mkdir()
    _jpeg(root / "real.jpg")
    os.mkfifo(root / "fifo.jpg")
    (root / "zero.jpg").symlink_to("/dev/zero")
    outside = _jpeg(tmp_path / "outside.jpg")
    (root / "out.jpg").symlink_to(outside)
    (root / "in.jpg").symlink_to(root / "real.jpg")
    names = {os.path.basename(p) for p in list_files(root)}
    assert names == {"real.jpg", "fifo.jpg"}  # links skipped; the FIFO listed, to be reported
    assert {os.path.basename(p) for p in list_files(root, follow_links=True)} == {"real.jpg", "fifo.jpg", "in.jpg"}
    result = {}
    t = threading.Thread(target=lambda: result.update(df=scan_dir(root)), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the scan hung"
    df = result["df"].set_index(result["df"]["path"].map(os.path.basename))
    assert df.loc["real.jpg", "ok"] and not df.loc["fifo.jpg", "ok"]
    assert "FIFO" in df.loc["fifo.jpg", "error"]
    assert "device" in scan_file(root / "zero.jpg")["error"]  # even when named explicitly


def test_a_forged_size_header_and_an_undecodable_name_are_reported(tmp_path):
    from holdout.scan import scan_dir

    root = tmp_path / "photos"
    root.mkdir()
    data = bytearray(_jpeg(root / "small.jpg").read_bytes())
    sof = data.find(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = (12000).to_bytes(2, "big") + (12000).to_bytes(2, "big")
    (root / "forged.jpg").write_bytes(bytes(data))
    (root / os.fsdecode(b"bad-\xff\xfe.jpg")).write_bytes((root / "small.jpg").read_bytes())
    df = scan_dir(root)
    rows = {os.path.basename(p): r for p, r in zip(df["path"], df.to_dict("records"))}
    assert rows["small.jpg"]["ok"]
    assert not rows["forged.jpg"]["ok"] and "12000x12000" in rows["forged.jpg"]["error"]
    bad = next(r for name, r in rows.items() if name.startswith("bad-"))
    assert not bad["ok"] and "not valid UTF-8" in bad["error"]
    bad["path"].encode("utf-8")  # printable, so the manifest writes


def test_empty_scans_bad_hashes_folders_and_negative_seeds_are_refused_by_name(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["scan", str(tmp_path / "empty"), "-o", str(tmp_path / "e.parquet")]) == 2
    assert "found no files under" in capsys.readouterr().err and not (tmp_path / "e.parquet").exists()
    row = {c: "" for c in ("path", "error", "md5", "phash", "dhash")} | {"ok": True, "label": "a"}
    pd.DataFrame([row, {**row, "phash": "zz"}]).to_parquet(tmp_path / "bad.parquet")
    pd.DataFrame([row]).iloc[:0].to_parquet(tmp_path / "none.parquet")
    for manifest, message in (
        ("bad.parquet", "column 'phash', row 1: expected 16 hex digits, got 'zz'"),
        ("none.parquet", "has no rows"),
        ("empty", "is a folder, not a manifest"),
    ):
        assert main(["filter", str(tmp_path / manifest), "--rules", "cmi10", "-o", str(tmp_path / "k.parquet")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "k.parquet").exists()
    for argv in (
        ["build", "x.parquet", "-o", "y.parquet", "--seed", "-1"],
        ["manipulate", "x", "-o", "y", "--seed=-1"],
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert "argument --seed: expected an integer >= 0, got '-1'" in capsys.readouterr().err
