"""level1: sources, crops, model/weights, training (top-k, resume, schedules), prediction and OOF on real crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from level1.config import Level1Config  # noqa: E402
from level1.data import (  # noqa: E402
    BalancedSampler,
    assign_folds,
    d4_transform,
    make_views,
    pad_reflect,
    random_even_crop,
    read_manifest,
    scan_folder,
    train_crop,
    view_names,
)
from level1.errors import ImageDataError, RunError, WeightsError  # noqa: E402
from level1.imageio import ImageReadError, read_image  # noqa: E402
from stacker.errors import ConfigError, StackerError  # noqa: E402

TINY = "test_resnet.r160_in1k"  # 0.4M parameters: a full timm ResNet at test size


def _coords(h: int, w: int) -> np.ndarray:
    """An image whose pixels encode their coordinates (y in R/G, x in B/G high bits)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y % 256, (y // 256) * 16 + x // 256, x % 256], axis=2).astype(np.uint8)


def _find(arr: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    y = int(crop[0, 0, 0]) + 256 * (int(crop[0, 0, 1]) // 16)
    x = int(crop[0, 0, 2]) + 256 * (int(crop[0, 0, 1]) % 16)
    assert np.array_equal(arr[y : y + crop.shape[0], x : x + crop.shape[1]], crop)
    return y, x


def _write_dataset(root: Path, classes=("a", "b", "c"), per_class=4, size=96, seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            base = rng.integers(0, 255, (size, size, 3)).astype(np.float64)
            base[..., k % 3] = base[..., k % 3] * 0.3 + 150  # a class-dependent colour cast
            Image.fromarray(base.astype(np.uint8)).save(root / c / f"{c}{i}.jpg", quality=95)
    return root


def _cfg(data: Path | str, **kw) -> Level1Config:
    base = dict(
        data=str(data),
        model=TINY,
        crop=48,
        batch_size=6,
        epochs=1,
        steps_per_epoch=2,
        progress=False,
        val_max_images=12,
        top_k=2,
    )
    base.update(kw)
    return Level1Config(**base).validate()


# ----------------------------------------------------------------- config
def test_config_files_and_bad_values(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[level1]\nmodel = "resnet10t"\ncrop = 64\nviews = ["identity", "d4"]\nno_d4_classes = ["x"]\n')
    cfg = Level1Config.from_file(toml)
    assert (cfg.model, cfg.crop, cfg.views, cfg.no_d4_classes) == ("resnet10t", 64, ["identity", "d4"], ["x"])
    yml = tmp_path / "c.yaml"
    yml.write_text("crop: 32\nmanip_variants: all\n")
    assert len(Level1Config.from_file(yml).manip_variants) == 8
    (tmp_path / "bad.toml").write_text("crops = 3\n")
    with pytest.raises(ConfigError, match="unknown level1 option.*crops"):
        Level1Config.from_file(tmp_path / "bad.toml")
    for kw, match in [
        (dict(crop=63), "even"),
        (dict(folds=2, fold=2), "below folds"),
        (dict(views=["fivecrop"]), "predict_size"),
        (dict(views=["tencrop"]), "unknown view"),
        (dict(manip_variants=["jpg50"]), "unknown manipulations"),
        (dict(schedule="step"), "schedule"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Level1Config(**kw).validate()


# ---------------------------------------------------------------- geometry
def test_random_crops_are_even_aligned_and_small_images_reflect():
    arr = _coords(300, 410)
    rng = np.random.default_rng(0)
    offsets = {_find(arr, random_even_crop(arr, 64, rng)) for _ in range(50)}
    assert all(y % 2 == 0 and x % 2 == 0 for y, x in offsets) and len(offsets) > 10
    small = _coords(25, 49)
    padded = pad_reflect(small, 64)
    assert padded.shape == (64, 64, 3)
    assert np.array_equal(padded[:25, :49], small)  # original pixels keep their grid position
    assert np.array_equal(padded[25, :49], small[24])  # mirrored, not resampled


def test_d4_group_and_views():
    arr = _coords(8, 8)
    views = [d4_transform(arr, k) for k in range(8)]
    assert len({v.tobytes() for v in views}) == 8
    assert np.array_equal(views[0], arr)
    base = _coords(80, 80)
    v = make_views(base, ["identity", "d4", "fivecrop"], 64)
    assert list(v) == view_names(["identity", "d4", "fivecrop"]) and len(v) == 8 + 20
    assert _find(base, v["crop-br-rot0"]) == (16, 16) and _find(base, v["crop-c-rot0"]) == (8, 8)
    assert np.array_equal(v["crop-tl-rot90"], np.rot90(base[:64, :64]))


def test_train_crop_manipulation_and_orientation():
    from holdout.manipulate import MANIPULATIONS

    arr = _coords(200, 200)
    rng = np.random.default_rng(1)
    kinds = set()
    for _ in range(30):
        out, flag, kind = train_crop(arr, size=48, manip=0, manip_prob=1.0, d4=True, rng=rng)
        assert out.shape == (48, 48, 3) and flag == 1 and kind in MANIPULATIONS
        kinds.add(kind)
    assert len(kinds) >= 5
    # already-manipulated images are not manipulated again; d4=False keeps the orientation
    for _ in range(10):
        out, flag, kind = train_crop(arr, size=48, manip=1, manip_prob=1.0, d4=False, rng=rng)
        assert (flag, kind) == (1, "")
        _find(arr, out)
    # an image smaller than twice the crop is manipulated whole, then cropped
    out, flag, kind = train_crop(_coords(60, 60), size=48, manip=0, manip_prob=1.0, d4=False, rng=rng)
    assert out.shape == (48, 48, 3) and flag == 1


def test_balanced_sampler_is_balanced_and_deterministic():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    s = BalancedSampler(labels, 3000, seed=3)
    s.set_epoch(2)
    first = list(s)
    counts = np.bincount(np.asarray(labels)[[i for i, _ in first]], minlength=3)
    assert counts.min() > 800
    assert first == list(s)
    s.set_epoch(3)
    assert first != list(s)


# ------------------------------------------------------------------ sources
def test_folder_source_and_bad_folders(tmp_path):
    root = _write_dataset(tmp_path / "d")
    (root / "a" / "notes.txt").write_text("x")
    records, classes, skipped = scan_folder(root)
    assert classes == ["a", "b", "c"] and len(records) == 12 and records[0].id == "a/a0.jpg"
    assert [s.reason for s in skipped] == ["not an image file extension"]
    (root / "empty").mkdir()
    with pytest.raises(ImageDataError, match="empty"):
        scan_folder(root)
    with pytest.raises(ImageDataError, match="does not exist"):
        scan_folder(tmp_path / "missing")


def test_manifest_source_real_crops(cmi_crops_dir, tmp_path):
    records, classes, skipped = read_manifest(
        cmi_crops_dir / "external_validation.csv", path_col="fname", label_col="camera", manip_col="is_altered"
    )
    assert len(records) == 325 and len(classes) == 10 and not skipped
    assert sum(r.manip for r in records) == 161
    folded = assign_folds(records, 2, seed=0)
    for c in classes:
        assert {r.fold for r in folded if r.label == c} == {0, 1}
    with pytest.raises(ImageDataError, match="no path column 'path'"):
        read_manifest(cmi_crops_dir / "external_validation.csv")
    bad = tmp_path / "m.csv"
    bad.write_text(f"path,label,manip_kind\n{cmi_crops_dir / '0_manip.jpg'},x,blur\n")
    with pytest.raises(ImageDataError, match="unknown manipulation 'blur'"):
        read_manifest(bad)


def test_corrupted_and_invalid_files(exif_samples_dir, tmp_path):
    with pytest.raises(ImageReadError, match="corrupt JPEG"):
        read_image(exif_samples_dir / "corrupted.jpg")
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(exif_samples_dir / "invalid" / "README")
    data = (exif_samples_dir / "Canon_40D.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError):
        read_image(tmp_path / "cut.jpg")
    assert read_image(exif_samples_dir / "invalid" / "image01713.jpg").shape == (500, 49, 3)


# -------------------------------------------------------------------- model
def test_unknown_model_and_weights_files(tmp_path):
    from safetensors.torch import save_file

    from level1.model import Level1Net, create_backbone

    with pytest.raises(ConfigError, match="unknown timm model name 'resnet10x'.*resnet10t"):
        create_backbone("resnet10x")
    src = create_backbone(TINY)
    state = {k: v.clone() for k, v in src.state_dict().items()}
    state["fc.weight"] = torch.zeros(1000, src.num_features)  # an ImageNet classifier is dropped
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for f in ("w.pth", "w.safetensors"):
        net = Level1Net(TINY, 3, weights=str(tmp_path / f))
        key = next(iter(src.state_dict()))
        assert torch.equal(net.backbone.state_dict()[key], src.state_dict()[key])
    other = create_backbone("test_efficientnet.r160_in1k")
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not fit.*missing"):
        Level1Net(TINY, 3, weights=str(tmp_path / "other.pth"))
    wide = {k: (torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k == key else v) for k, v in src.state_dict().items()}
    torch.save(wide, tmp_path / "wide.pth")
    with pytest.raises(WeightsError, match="shape mismatch"):
        Level1Net(TINY, 3, weights=str(tmp_path / "wide.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read"):
        Level1Net(TINY, 3, weights=str(tmp_path / "junk.pth"))


# ----------------------------------------------------------------- training
def test_train_topk_predict_views_and_variants(tmp_path):
    from level1.predict import predict
    from level1.train import train_model
    from stacker.table import read_table

    root = _write_dataset(tmp_path / "d")
    cfg = _cfg(root, folds=2, fold=0, epochs=3, no_d4_classes=["a"])
    res = train_model(cfg, tmp_path / "run", log=lambda m: None)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["finished"] and len(info["history"]) == 3
    kept = info["checkpoints"]
    assert len(kept) == 2 and kept[0]["score"] <= kept[1]["score"]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == sorted(
        Path(c["file"]).name for c in kept
    )
    for c in kept:
        assert c["score"] == pytest.approx(0.7 * c["val_loss_unaltered"] + 0.3 * c["val_loss_manipulated"])
    assert res.checkpoints == kept
    with pytest.raises(RunError, match="already holds a run"):
        train_model(cfg, tmp_path / "run", log=lambda m: None)
    out = tmp_path / "p.parquet"
    table, skipped = predict(
        tmp_path / "run",
        [root / "b"],
        out,
        views=["identity", "d4", "fivecrop"],
        predict_size=64,
        manip_variants=["jpg90", "gamma0.8"],
        progress=False,
    )
    t = read_table(out)
    assert t.models == ("run",) and len(t) == 4 * 3 * 28
    assert set(t.meta["manip_kind"]) == {"", "jpg90", "gamma0.8"}
    assert (t.meta["manip"] == (t.meta["manip_kind"] != "").astype(int)).all()
    assert np.allclose(t.probs.sum(axis=2), 1, atol=1e-5)


def test_resume_matches_an_uninterrupted_run(tmp_path):
    from level1.train import train_model

    root = _write_dataset(tmp_path / "d")
    cfg = _cfg(root, epochs=2, holdout=None, manip_prob=0.5)
    train_model(cfg, tmp_path / "full", log=lambda m: None)

    def stop(msg):
        if "epoch 1/2" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(cfg, tmp_path / "cut", log=stop)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["epochs_done"] == 1
    res = train_model(cfg.replace(workers=0), tmp_path / "cut", resume=True, log=lambda m: None)
    assert [h["epoch"] for h in res.history] == [0, 1]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cosine_sgd_cycles_and_ema(tmp_path):
    from level1.train import train_model

    root = _write_dataset(tmp_path / "d")
    cfg = _cfg(root, folds=2, fold=1, schedule="cosine", sgd_cycles=2, sgd_cycle_epochs=1, ema_decay=0.5, top_k=3)
    res = train_model(cfg, tmp_path / "run", log=lambda m: None)
    assert [h["phase"] for h in res.history] == ["adam", "sgd", "sgd"]
    # each SGD cycle anneals to 1% of its peak by its last step
    assert res.history[1]["lr"] == pytest.approx(cfg.sgd_lr * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi / 2))))
    assert len(res.checkpoints) == 3


def test_bad_training_inputs(tmp_path, capsys):
    from level1.cli import main
    from level1.train import train_model

    root = _write_dataset(tmp_path / "d")
    from PIL import Image

    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / "a" / "tiny.jpg")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    res = train_model(_cfg(root, small_images="skip"), tmp_path / "run", log=lambda m: None)
    reasons = {Path(s.path).name: s.reason for s in res.skipped}
    assert "smaller than the crop" in reasons["tiny.jpg"] and "broken.jpg" in reasons
    assert (tmp_path / "run" / "skipped.csv").read_text().count("\n") == 3
    rc = main(["train", "--data", str(root), "--model", "resnet10x", "-o", str(tmp_path / "r2"), "--no-progress"])
    assert rc == 2 and "unknown timm model name 'resnet10x'" in capsys.readouterr().err
    (root / "zz").mkdir()
    with pytest.raises(ImageDataError, match="zz.*empty"):
        train_model(_cfg(root), tmp_path / "r3", log=lambda m: None)
    assert issubclass(ImageDataError, StackerError)


# --------------------------------------------------------- real OOF run
@pytest.mark.slow
@pytest.mark.shared_data
def test_oof_on_real_crops_reads_in_stacker(cmi_crops_dir, exif_samples_dir, tmp_path, capsys):
    from level1.cli import main
    from stacker.apps.cli import main as stacker_main
    from stacker.table import read_table

    run = tmp_path / "cnn"
    rc = main(
        [
            "oof",
            "--data",
            str(cmi_crops_dir / "external_validation.csv"),
            "--path-col",
            "fname",
            "--label-col",
            "camera",
            "--manip-col",
            "is_altered",
            "--folds",
            "2",
            "--model",
            TINY,
            "--crop",
            "48",
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "8",
            "--val-max-images",
            "16",
            "--views",
            "identity,d4",
            "--no-progress",
            "-o",
            str(run),
            "--test",
            str(exif_samples_dir / "corrupted.jpg"),
            str(exif_samples_dir / "invalid"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "corrupted.jpg: corrupt JPEG" in err and "invalid/README" in err
    t = read_table(run / "oof.parquet")
    assert t.models == ("cnn",) and set(t.meta["view"]) == set(view_names(["d4"]))
    labelled = t.meta[t.meta["label"].notna()]
    assert labelled["id"].nunique() == 325 and len(labelled) == 325 * 8
    # every OOF row comes from the fold model that did not train on it
    for k in (0, 1):
        split = __import__("pandas").read_csv(run / f"fold{k}" / "split.csv")
        val_ids = set(split.loc[split["role"] == "val", "id"])
        assert set(labelled.loc[labelled["fold"] == k, "id"]) == val_ids
        assert not val_ids & set(split.loc[split["role"] == "train", "id"])
    test = t.meta[t.meta["label"].isna()]
    assert test["fold"].isna().all() and test["id"].nunique() == 7  # 7 readable images in invalid/
    assert stacker_main(["inspect", str(run / "oof.parquet")]) == 0


def test_fixed_holdout_list(tmp_path):
    import pandas as pd

    from level1.train import train_model

    root = _write_dataset(tmp_path / "d")
    (tmp_path / "hold.txt").write_text("a/a1.jpg\nb/b2.jpg\nc3.jpg\n")  # ids or bare file names
    train_model(_cfg(root, holdout=str(tmp_path / "hold.txt")), tmp_path / "run", log=lambda m: None)
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert sorted(split.loc[split["role"] == "val", "id"]) == ["a/a1.jpg", "b/b2.jpg", "c/c3.jpg"]
    (tmp_path / "none.txt").write_text("zzz.jpg\n")
    with pytest.raises(ImageDataError, match="no image of the source is in the holdout list"):
        train_model(_cfg(root, holdout=str(tmp_path / "none.txt")), tmp_path / "run2", log=lambda m: None)


@pytest.mark.parametrize("name", ["resnet10t", "mobilenetv3_small_050"])
def test_head_fits_models_whose_pooled_width_differs_from_num_features(name):
    # MobileNetV3 adds a conv head after pooling: its pooled width is head_hidden_size (1024), not 288.
    import torch

    from level1.model import Level1Net

    net = Level1Net(name, n_classes=3).eval()
    with torch.inference_mode():
        out = net(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0.0, 1.0]))
    assert out.shape == (2, 3)


def test_validation_runs_in_eval_mode_and_leaves_batchnorm_stats_alone(tmp_path):
    import torch

    from level1.model import Level1Net
    from level1.train import _validate, _validation_items

    root = _write_dataset(tmp_path / "data", per_class=3, size=48)
    cfg = _cfg(root, crop=32)
    from level1.data import scan_folder

    records, classes, _ = scan_folder(root)
    class_index = {c: i for i, c in enumerate(classes)}
    net = Level1Net("resnet10t", n_classes=len(class_index)).train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    val, items = _validation_items(records, cfg)
    metrics, _ = _validate(net, val, items, class_index, cfg, torch.device("cpu"))
    assert net.training  # the caller's mode is restored
    after = {k: v for k, v in net.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert 0.0 <= metrics["val_acc"] <= 1.0


@pytest.mark.parametrize("extra", [{"fold": 1}, {"holdout": "ids.txt"}])
def test_oof_refuses_options_for_one_model(tmp_path, extra):
    from level1 import Level1Config, train_oof
    from stacker.errors import ConfigError

    cfg = Level1Config(data=str(tmp_path), folds=2, **extra)
    with pytest.raises(ConfigError, match="level1 train"):
        train_oof(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_predict_without_images_is_one_error_line(capsys):
    from level1.cli import main

    assert main(["predict", "run", "-o", "x.parquet"]) == 2
    assert capsys.readouterr().err == "level1 predict: error: give image files or folders to predict, or --manifest\n"


def test_a_run_that_fails_before_its_first_epoch_leaves_nothing(tmp_path, capsys):
    # The same command, corrected, must not then be refused with "output directory ... is not empty".
    from level1.cli import main

    root = _write_dataset(tmp_path / "d", per_class=2, size=48)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("the user's")
    base = ["train", "--data", str(root), "--crop", "32", "--model", TINY, "--no-progress", "--epochs", "1"]
    for out, extra, message in (
        ("r1", ["--weights", str(tmp_path / "nope.pth")], "weights file"),
        ("r1", ["--device", "cuda"] if not _cuda() else ["--model", "resnet10x"], "--device (option 'device')"
         if not _cuda() else "unknown timm model"),
        ("kept", ["--overwrite", "--weights", str(tmp_path / "nope.pth")], "weights file"),
    ):  # fmt: skip
        assert main(base + ["-o", str(tmp_path / out), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "r1").exists()
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["mine.txt"]
    (tmp_path / "ids.txt").write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a list")
    assert main(base + ["-o", str(tmp_path / "r1"), "--holdout", str(tmp_path / "ids.txt")]) == 2
    assert "is not a text file (one id a line" in capsys.readouterr().err and not (tmp_path / "r1").exists()
    assert main(base + ["-o", str(tmp_path / "r1"), "--batch-size", "0"]) == 2
    assert "--batch-size (option 'batch_size') must be an integer >= 1 (got 0)" in capsys.readouterr().err


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
