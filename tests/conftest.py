"""Shared fixtures: the real data in ../shared/data, and small synthetic tables."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CIFAR = SHARED / "cifar10-5models" / "probs.parquet"
CMI_CROPS = SHARED / "cmi-crops"
EXIF_SAMPLES = SHARED / "exif-samples"
TABULAR = SHARED / "tabular"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the project root)")
    return path


@pytest.fixture(scope="session")
def cifar_path() -> Path:
    """The real 5-model CIFAR-10 probability table."""
    return _need(CIFAR)


@pytest.fixture(scope="session")
def cifar_table(cifar_path):
    from stacker.table import read_table

    return read_table(cifar_path)


@pytest.fixture(scope="session")
def cmi_crops_dir() -> Path:
    """325 real 512x512 camera-model crops and external_validation.csv."""
    return _need(CMI_CROPS)


@pytest.fixture(scope="session")
def exif_samples_dir() -> Path:
    """Real JPEGs with EXIF, plus corrupted.jpg and invalid/."""
    return _need(EXIF_SAMPLES)


@pytest.fixture(scope="session")
def tabular_dir() -> Path:
    return _need(TABULAR)


CAMERAS = [
    "HTC-1-M7",
    "iPhone-4s",
    "iPhone-6",
    "LG-Nexus-5x",
    "Motorola-Droid-Maxx",
    "Motorola-Nexus-6",
    "Motorola-X",
    "Samsung-Galaxy-Note3",
    "Samsung-Galaxy-S4",
    "Sony-NEX-7",
]


def make_table(
    n_images: int = 60,
    models: tuple[str, ...] = ("cnn-a", "cnn-b"),
    classes: list[str] | None = None,
    views: tuple[str, ...] = ("identity",),
    manip: bool = True,
    seed: int = 0,
    labels: bool = True,
    n_folds: int | None = 3,
):
    """A realistic table: peaked Dirichlet probabilities that favour the true class."""
    from stacker.table import PredictionTable

    classes = list(classes or CAMERAS)
    rng = np.random.default_rng(seed)
    k = len(classes)
    y = np.arange(n_images) % k
    rng.shuffle(y)
    rows_id, rows_view, rows_y, rows_manip, rows_fold = [], [], [], [], []
    for i in range(n_images):
        for v in views:
            rows_id.append(f"img{i:05d}")
            rows_view.append(v)
            rows_y.append(y[i])
            rows_manip.append(i % 2)
            rows_fold.append(i % (n_folds or 1))
    n = len(rows_id)
    probs = {}
    for m in models:
        alpha = np.full((n, k), 0.3)
        alpha[np.arange(n), rows_y] += rng.uniform(0.5, 4.0)
        probs[m] = np.vstack([rng.dirichlet(a) for a in alpha])
    return PredictionTable.from_arrays(
        rows_id,
        probs,
        classes,
        labels=[classes[j] for j in rows_y] if labels else None,
        views=rows_view,
        manip=rows_manip if manip else None,
        folds=rows_fold if n_folds else None,
    )


@pytest.fixture
def small_table():
    return make_table()
