"""The eight challenge manipulations: sizes, reproducibility, and agreement with their definitions."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from holdout.errors import ImageError
from holdout.manipulate import (
    BACKENDS,
    MANIPULATIONS,
    gamma_lut,
    manipulate,
    parse_manipulation,
    random_manipulation,
    source_size,
)
from stacker.errors import ConfigError, StackerError

SIZE = 256  # the real crops are 512 px, i.e. twice this target


@pytest.fixture(scope="module")
def crops(cmi_crops_dir):
    names = sorted(p for p in cmi_crops_dir.glob("*.jpg"))[:6]
    return [np.asarray(Image.open(p).convert("RGB")) for p in names]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_contract():
    assert MANIPULATIONS == (
        "jpg70", "jpg90", "resize0.5", "resize0.8", "resize1.5", "resize2.0", "gamma0.8", "gamma1.2",
    )  # fmt: skip
    assert parse_manipulation("jpg70") == ("jpeg", 70.0)
    assert parse_manipulation("resize0.8") == ("resize", 0.8)
    assert parse_manipulation("gamma1.2") == ("gamma", 1.2)
    assert all(source_size(k, 512) == 1024 for k in MANIPULATIONS)
    import holdout

    assert holdout.MANIPULATIONS is MANIPULATIONS and holdout.manipulate is manipulate


@pytest.mark.shared_data
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", MANIPULATIONS)
def test_documented_size_and_determinism(crops, kind, backend):
    out = manipulate(crops[0], kind, size=SIZE, backend=backend)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (SIZE, SIZE)
    again = manipulate(Image.fromarray(crops[0]), kind, size=SIZE, backend=backend)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(again))


@pytest.mark.shared_data
def test_whole_image_without_crop(crops):
    assert manipulate(crops[0], "resize1.5", size=None).size == (768, 768)
    assert manipulate(crops[0], "resize0.5", size=None, backend="cv2").size == (256, 256)
    assert manipulate(crops[0], "gamma1.2", size=None).size == (512, 512)
    assert manipulate(crops[0][:300, :500], "resize0.8", size=None).size == (400, 240)


@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["gamma0.8", "gamma1.2"])
def test_gamma_matches_definition(crops, kind):
    g = float(kind[5:])
    for arr in crops:
        out = np.asarray(manipulate(arr, kind, size=SIZE))
        c = (arr.shape[0] - SIZE) // 2
        src = arr[c : c + SIZE, c : c + SIZE].astype(np.float64)
        expected = np.rint(255.0 * (src / 255.0) ** g).astype(np.uint8)
        np.testing.assert_array_equal(out, expected)
    # gamma < 1 brightens, gamma > 1 darkens; the end points are fixed
    lut = gamma_lut(g)
    assert lut[0] == 0 and lut[255] == 255
    mid = np.arange(1, 255)
    assert ((lut[1:255] >= mid).all() and (lut[1:255] > mid).any()) if g < 1 else (lut[1:255] <= mid).all()


@pytest.mark.shared_data
@pytest.mark.parametrize("backend", BACKENDS)
def test_jpeg_matches_definition(crops, backend):
    """Output = centre crop of decode(encode(2x crop, q)); lower quality loses more."""
    for arr in crops[:3]:
        psnr = {}
        for q in (70, 90):
            out = np.asarray(manipulate(arr, f"jpg{q}", size=SIZE, backend=backend))
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=q)  # arr is already the 2x crop
            ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            c = (arr.shape[0] - SIZE) // 2
            ref = ref[c : c + SIZE, c : c + SIZE]
            diff = np.abs(out.astype(int) - ref.astype(int))
            if backend == "pil":
                assert diff.max() == 0
            else:  # both libjpeg with the standard tables: at most rounding differences
                assert diff.mean() < 0.5
            psnr[q] = _psnr(out, arr[c : c + SIZE, c : c + SIZE])
            assert not np.array_equal(out, arr[c : c + SIZE, c : c + SIZE])
        assert 25 < psnr[70] < psnr[90] < 60


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", [k for k in MANIPULATIONS if k.startswith("resize")])
def test_resize_geometry_on_a_ramp(kind, backend):
    """Bicubic reproduces a linear ramp, so each output pixel must equal the ramp at its source point.

    This checks the factor, the two centre crops and the pixel-centre convention independently of
    any library: output pixel i comes from resized pixel i + o2, i.e. source x = (i + o2 + .5)/f - .5 + o1.
    """
    f = float(kind[6:])
    h = w = 700  # odd offsets on purpose: (700 - 512) // 2 = 94
    size = SIZE
    slope_x, slope_y = 0.11, 0.07
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    plane = 20 + slope_x * xx + slope_y * yy
    arr = np.repeat(np.rint(plane).astype(np.uint8)[:, :, None], 3, axis=2)
    out = np.asarray(manipulate(arr, kind, size=size, backend=backend))[:, :, 0].astype(np.float64)
    side = source_size(kind, size)
    o1 = (h - side) // 2
    o2 = (round(side * f) - size) // 2
    i = np.arange(size, dtype=np.float64)
    src = (i + o2 + 0.5) / f - 0.5 + o1
    expected = 20 + slope_x * src[None, :] + slope_y * src[:, None]
    err = np.abs(out - expected)
    assert err.mean() < 0.6 and err.max() <= 1.6


@pytest.mark.shared_data
def test_resize_on_real_crops(crops):
    """The two backends agree closely on upscales; down-then-up returns a close copy."""
    for arr in crops[:3]:
        for kind in ("resize1.5", "resize2.0"):
            a = np.asarray(manipulate(arr, kind, size=SIZE, backend="pil"))
            b = np.asarray(manipulate(arr, kind, size=SIZE, backend="cv2"))
            assert _psnr(a, b) > 35
        up = np.asarray(manipulate(arr, "resize2.0", size=None))
        back = np.asarray(manipulate(up, "resize0.5", size=None))
        assert back.shape == arr.shape and _psnr(back, arr) > 30


def test_random_manipulation_is_seeded_and_uniform():
    a = [random_manipulation(np.random.default_rng(7)) for _ in range(3)]
    assert len(set(a)) == 1
    rng1, rng2 = np.random.default_rng(123), np.random.default_rng(123)
    seq1 = [random_manipulation(rng1) for _ in range(50)]
    assert seq1 == [random_manipulation(rng2) for _ in range(50)]
    rng = np.random.default_rng(0)
    counts = Counter(random_manipulation(rng) for _ in range(8000))
    assert set(counts) == set(MANIPULATIONS)
    assert all(900 < c < 1100 for c in counts.values())


def test_bad_inputs():
    arr = np.zeros((600, 600, 3), np.uint8)
    with pytest.raises(ConfigError, match="unknown manipulation 'jpg50'"):
        manipulate(arr, "jpg50", size=256)
    with pytest.raises(ConfigError, match="unknown backend 'skimage'"):
        manipulate(arr, "jpg70", size=256, backend="skimage")
    with pytest.raises(ImageError, match=r"needs a centre crop of 1024x1024 pixels, but the image is only 600x600"):
        manipulate(arr, "resize0.5", size=512)
    with pytest.raises(ImageError, match="uint8"):
        manipulate(arr.astype(np.float32), "jpg70", size=256)
    with pytest.raises(ImageError, match="shape"):
        manipulate(np.zeros((600, 600, 4), np.uint8), "jpg70", size=256)
    with pytest.raises(ConfigError, match="size"):
        manipulate(arr, "jpg70", size=0)
    with pytest.raises(ConfigError):
        random_manipulation(np.random.RandomState(0))
    assert issubclass(ImageError, StackerError)
    # grey arrays and other PIL modes are turned into RGB
    assert manipulate(np.zeros((600, 600), np.uint8), "gamma0.8", size=256).mode == "RGB"
    assert manipulate(Image.new("L", (600, 600)), "jpg90", size=256).size == (256, 256)


def test_the_command_names_the_largest_size_that_fits(tmp_path, capsys):
    from holdout.cli import main

    Image.fromarray(np.zeros((512, 512, 3), np.uint8)).save(tmp_path / "crop.png")
    assert main(["manipulate", str(tmp_path / "crop.png"), "-o", str(tmp_path / "out"), "--kinds", "resize0.5"]) == 2
    err = capsys.readouterr().err
    assert "pass a smaller --size (at most 256 for this image) or --size none" in err
    assert main(["manipulate", str(tmp_path / "crop.png"), "-o", str(tmp_path / "out"), "--size", "256"]) == 0


@pytest.mark.parametrize("size", ["abc", "0", "-5", "1.5"])
def test_a_bad_size_is_refused_by_name_before_any_folder_is_made(tmp_path, capsys, size):
    from holdout.cli import main

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "crop.png")
    with pytest.raises(SystemExit) as exc:
        main(["manipulate", str(tmp_path / "crop.png"), "-o", str(tmp_path / "out"), f"--size={size}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --size: expected a positive number of pixels or 'none', got '{size}'" in err
    assert "lambda" not in err and not (tmp_path / "out").exists()


def test_a_first_input_that_fails_leaves_no_empty_output_folder(tmp_path):
    from holdout.cli import main

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "crop.png")
    assert main(["manipulate", str(tmp_path / "crop.png"), "-o", str(tmp_path / "out"), "--size", "64"]) == 2
    assert not (tmp_path / "out").exists()
    assert main(["manipulate", str(tmp_path / "crop.png"), "-o", str(tmp_path / "out"), "--size", "NONE"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == len(MANIPULATIONS)
