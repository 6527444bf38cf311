"""The report as a person sees it: rendered by a real headless Chromium in a 1,000-px-wide window.

Skipped with a message when no Chromium is installed (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import make_table
from stacker.apps.report import FIGURES, build_report
from stacker.blend import Blend
from stacker.chain import Chain
from stacker.equalize import HungarianEqualizer
from stacker.files import atomic_write_text
from stacker.transforms import TemperatureScaling

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium here (apt-get install chromium); .ci/run installs it"
)

WINDOW = 1000
RECIPE = {
    "name": "browser-check",
    "families": {
        "xgboost": {"count": 2, "n_estimators": 20, "max_depth": 2},
        "pool": {"count": 1},
        "selection": {"count": 1},
    },
}

# Runs after the page has loaded: the layout facts the test checks, written into the DOM that --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const figs = [...document.querySelectorAll('figure img')].map(img => {
    const r = img.getBoundingClientRect();
    return {id: img.alt, natural: img.naturalWidth, width: r.width, left: r.left, right: r.right};
  });
  const out = {inner: window.innerWidth, scroll: document.documentElement.scrollWidth, figures: figs,
               title: document.title, h1: document.querySelector('h1').textContent,
               note: !!document.getElementById('unbalanced')};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    # Long class and model names and an unbalanced holdout: the cases that overflowed or went unexplained.
    classes = [f"Camera-Model-{i}-with-a-long-name" for i in range(10)]
    holdout = make_table(
        n_images=400, models=("densenet161-snapshot", "se-resnext50", "dpn92"), classes=classes, seed=4, n_folds=None
    )
    holdout = holdout.take(np.flatnonzero((holdout.y != 0) | (np.arange(len(holdout)) % 3 == 0)))
    blend = Blend(recipe=RECIPE, n_folds=3, seed=0, n_jobs=1, progress=False)
    chain = Chain([blend, TemperatureScaling(), HungarianEqualizer(by="manip")]).fit(holdout)
    chain.save(root / "bundle")
    text, data = build_report(root / "bundle")
    page = root / "report.html"
    atomic_write_text(page, text.replace("</body>", PROBE + "</body>"))
    return root, page, data


def test_the_report_fits_a_1000px_window_with_every_figure_at_full_size(report):
    root, page, data = report
    res = _chromium(f"--window-size={WINDOW},1200", "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    m = re.search(r"<pre id=\"probe\">(.*?)</pre>", res.stdout, re.S)
    assert m, f"the page did not run its probe: {res.stderr[-2000:]}"
    probe = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert probe["scroll"] <= probe["inner"] <= WINDOW, probe  # nothing wider than the window
    shown = {f["id"] for f in probe["figures"]}
    assert shown == set(FIGURES), shown  # the reliability diagram included
    for fig in probe["figures"]:
        assert fig["natural"] > 200, fig  # the image decoded
        assert fig["right"] <= probe["inner"] and fig["left"] >= 0, fig  # not cut at either edge
        assert fig["width"] == pytest.approx(fig["natural"], abs=1), fig  # drawn at full size, not shrunk
    # The title names the recipe and the data, not the folder; the unbalanced holdout is said to be so.
    assert "browser-check" in probe["h1"] and "bundle" not in probe["h1"], probe["h1"]
    assert probe["note"]
    assert not data["label_balance"]["balanced"]
    # Before and after the chain's temperature scaling.
    assert list(data["reliability"]) == ["blend", "after temperature"]


def test_a_screenshot_shows_the_page_with_nothing_cut_at_the_right_edge(report, tmp_path):
    from PIL import Image

    _, page, _ = report
    shot = tmp_path / "shot.png"
    res = _chromium(
        f"--window-size={WINDOW},4000", "--virtual-time-budget=10000", f"--screenshot={shot}", page.as_uri()
    )
    assert shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[1] == WINDOW
    assert img.std() > 20  # figures and text, not a blank page
    # The page's right margin is background: no figure or table runs into the window's edge.
    assert (img[:, -10:] > 250).all(), "something is drawn at the right edge of a 1,000-px window"
