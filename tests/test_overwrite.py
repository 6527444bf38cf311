"""No command replaces, or writes into, what it reads (stacker.files.refuse_overwrite), and file outputs
that are empty or folders are refused by their option before any work."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_table
from stacker.errors import ConfigError
from stacker.files import atomic_path, check_output_file, refuse_overwrite
from stacker.table import write_table


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from stacker import Blend

    root = tmp_path_factory.mktemp("overwrite")
    table = make_table(n_images=40, seed=2)
    write_table(table, root / "h.parquet")
    write_table(make_table(n_images=40, seed=5), root / "b.parquet")
    Blend({"name": "p", "families": {"pool": {"count": 1}}}, n_folds=2, n_jobs=1).fit(table).save(root / "bun")
    (root / "my.toml").write_text('name = "mine"\n[families.pool]\ncount = 1\n')
    for cls, seed in (("A", 0), ("B", 1)):
        (root / "imgs" / cls).mkdir(parents=True)
        rgb = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / "imgs" / cls / "0.png")
    (root / "scan.parquet").write_bytes(b"not read: the check comes first")
    return root


# (tool, argv, the message), run from the work folder; every one is refused before it reads or writes anything.
CASES = [
    ("stacker", "fit h.parquet -o out -r fast -k 2 -j 1 --oof h.parquet", "output 'h.parquet' is also an input"),
    ("stacker", "fit h.parquet -o out -r my.toml --oof my.toml", "output 'my.toml' is also an input"),
    ("stacker", "fit h.parquet -o out --oof out", "outputs 'out' and 'out' are the same file"),
    ("stacker", "fit h.parquet -o out --oof out/oof.parquet", "are one inside the other"),
    ("stacker", "fit h.parquet -o . --oof o.parquet", "output '.' holds the input 'h.parquet'"),
    ("stacker", "fit h.parquet -o out --oof imgs", "--oof 'imgs' is a folder"),
    ("stacker", "report bun b.parquet -o b.parquet", "output 'b.parquet' is also an input"),
    ("stacker", "report bun -o bun/manifest.json", "output 'bun/manifest.json' is inside the bundle 'bun' it reads"),
    ("stacker", "merge h.parquet b.parquet -o b.parquet", "output 'b.parquet' is also an input"),
    ("stacker", "aggregate h.parquet -o h.parquet", "output 'h.parquet' is also an input"),
    ("stacker", "predict bun b.parquet -o imgs", "-o/--output 'imgs' is a folder"),
    ("stacker", "equalize b.parquet -o x.parquet --submission imgs", "--submission 'imgs' is a folder"),
    ("stacker", "tune h.parquet -o my.toml --recipe my.toml", "output 'my.toml' is also an input"),
    ("stacker", "tune h.parquet -o best.toml --journal h.parquet", "output 'h.parquet' is also an input"),
    ("holdout", "scan imgs -o imgs/A/0.png", "output 'imgs/A/0.png' is inside the folder 'imgs' it reads"),
    ("holdout", "filter scan.parquet --rules cmi10 -o scan.parquet", "output 'scan.parquet' is also an input"),
    ("holdout", "build scan.parquet -o scan.parquet --per-class 1", "output 'scan.parquet' is also an input"),
    ("holdout", "learn scan.parquet -o scan.parquet", "output 'scan.parquet' is also an input"),
    ("holdout", "manipulate imgs -o imgs", "output 'imgs' is also an input"),
    ("holdout", "manipulate imgs/A -o imgs/A/out", "output 'imgs/A/out' is inside the input folder 'imgs/A' it reads"),
    ("holdout", "manipulate imgs/A/0.png -o imgs", "output 'imgs' holds the input 'imgs/A/0.png'"),
    ("level1", "train --data imgs -o imgs --crop 32", "output 'imgs' is also an input"),
    (
        "level1",
        "train --data imgs -o imgs/run --crop 32",
        "output 'imgs/run' is inside the data folder 'imgs' it reads",
    ),
    ("level1", "oof --data imgs -o r --folds 2 --test nope.png", "--test: no such file or folder: 'nope.png'"),
    (
        "level1",
        "oof --data imgs -o r --folds 2 --table imgs/A/0.png",
        "output 'imgs/A/0.png' is inside the data folder",
    ),
    ("level1", "predict bun imgs -o imgs/A/0.png", "output 'imgs/A/0.png' is inside the image folder 'imgs' it reads"),
    ("level1", "predict bun imgs -o bun/x.parquet", "output 'bun/x.parquet' is inside the run 'bun' it reads"),
]


@pytest.mark.parametrize(
    "tool, argv, message", CASES, ids=[f"{t} {a.split()[0]} {i}" for i, (t, a, _) in enumerate(CASES)]
)
def test_a_command_never_writes_over_or_into_what_it_reads(work, monkeypatch, capsys, tool, argv, message):
    import importlib

    main = importlib.import_module(
        {"stacker": "stacker.apps.cli", "holdout": "holdout.cli", "level1": "level1.cli"}[tool]
    ).main
    monkeypatch.chdir(work)
    before = _digest(work)
    assert main(argv.split()) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert _digest(work) == before and not (work / "out").exists() and not (work / "best.db").exists()


def test_the_check_itself(tmp_path):
    (tmp_path / "d").mkdir()
    refuse_overwrite([tmp_path / "o.parquet", None, ""], [tmp_path / "i.parquet"], {tmp_path / "d": "bundle"})
    refuse_overwrite([tmp_path / "d2"], [tmp_path / "d"])  # a sibling whose name starts alike is not inside
    with pytest.raises(ConfigError, match="holds the input"):
        refuse_overwrite([tmp_path], [tmp_path / "d" / "x"])
    with pytest.raises(ConfigError, match="is inside the bundle"):
        refuse_overwrite([tmp_path / "d" / "x"], [], {tmp_path / "d": "bundle"})
    (tmp_path / "link").symlink_to(tmp_path / "d")
    with pytest.raises(ConfigError, match="is also an input"):
        refuse_overwrite([tmp_path / "link"], [tmp_path / "d"])
    with pytest.raises(ConfigError, match="--x is empty"):
        check_output_file(" ", "--x")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_path(tmp_path / "d"):
            pass
    with pytest.raises(OSError, match="the output path is empty"):
        with atomic_path(""):
            pass
