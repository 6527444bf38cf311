"""Power mean, prior shift (known / EM), temperature scaling and the Sinkhorn soft equalizer."""

from __future__ import annotations

import numpy as np
import pytest

from stacker.aggregate import aggregate_views
from stacker.errors import ConfigError, LabelError, NotFittedError
from stacker.metrics import log_loss
from stacker.table import PredictionTable
from stacker.transforms import (
    PowerMean,
    PriorShift,
    SinkhornEqualizer,
    TemperatureScaling,
    em_prior,
    sinkhorn,
)
from tests.conftest import make_table


def test_power_mean_views_models_both():
    table = make_table(n_images=30, views=("identity", "flip"), seed=2)
    views = PowerMean(p=0.0).transform(table)
    ref = aggregate_views(table, 0.0)
    np.testing.assert_allclose(views.probs, ref.probs)
    assert views.models == table.models and "view" not in views.meta.columns
    both = PowerMean(p=1.0, over="both", name="avg").transform(table)
    assert both.models == ("avg",) and len(both) == 30
    np.testing.assert_allclose(both.probs[:, 0, :], aggregate_views(table, 1.0).probs.mean(axis=1))
    models = PowerMean(over="models").transform(table)
    assert len(models) == len(table) and models.models == ("mean",)
    with pytest.raises(ConfigError, match="over"):
        PowerMean(over="rows").transform(table)


def _shifted_problem(seed=0, n=6000):
    """Posteriors calibrated under a uniform prior, applied to data with a skewed prior."""
    rng = np.random.default_rng(seed)
    k = 3
    target = np.array([0.6, 0.3, 0.1])
    y = rng.choice(k, size=n, p=target)
    means = np.eye(k) * 1.5
    x = means[y] + rng.normal(size=(n, k))
    # Bayes posterior under a uniform prior for this Gaussian model.
    logits = x @ means.T - 0.5 * (means**2).sum(axis=1)
    P = np.exp(logits - logits.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    return P, y, target


def test_em_recovers_the_shifted_prior():
    P, y, target = _shifted_problem()
    prior, post, it = em_prior(P, np.full(3, 1 / 3))
    np.testing.assert_allclose(prior, target, atol=0.03)
    assert it > 1
    # Adjusted posteriors have a lower log loss than the unadjusted ones.
    assert log_loss(y, post) < log_loss(y, P)


def test_prior_shift_known_and_em_on_tables():
    P, y, target = _shifted_problem(seed=1, n=3000)
    classes = ["a", "b", "c"]
    table = PredictionTable.from_arrays(
        [str(i) for i in range(len(y))], P, classes, models=["m"], labels=[classes[i] for i in y]
    )
    known = PriorShift(prior=target, source_prior="uniform").fit(table)
    out = known.transform(table)
    expected = P * target / (1 / 3)
    np.testing.assert_allclose(out.probs[:, 0, :], expected / expected.sum(axis=1, keepdims=True))
    em = PriorShift(prior="em", source_prior="uniform").fit(table)
    out_em = em.transform(table)
    np.testing.assert_allclose(em.estimate_prior(table), target, atol=0.04)
    assert not hasattr(em, "prior_")  # transform and estimate_prior leave the fitted state alone
    assert log_loss(y, out_em.probs[:, 0, :]) < log_loss(y, P)
    # Source prior from labels: the fitted table's label frequencies.
    lab = PriorShift(prior={"a": 1, "b": 1, "c": 1}).fit(table)
    np.testing.assert_allclose(lab.source_prior_, np.bincount(y, minlength=3) / len(y))


def test_prior_shift_bad_input():
    table = make_table(n_images=20, labels=False)
    with pytest.raises(LabelError, match="needs labels at fit"):
        PriorShift().fit(table)
    with pytest.raises(ConfigError, match="zero entries"):
        PriorShift(prior=[0] + [1] * 9, source_prior="uniform").fit(table)
    with pytest.raises(ConfigError, match="source_prior"):
        PriorShift(source_prior="flat").fit(table)
    for source in ("labels", "uniform"):  # nothing fits itself inside transform
        with pytest.raises(NotFittedError, match="not fitted"):
            PriorShift(source_prior=source).transform(table)


def test_temperature_scaling_fits_and_is_out_of_fold():
    rng = np.random.default_rng(0)
    n, k = 3000, 4
    y = rng.integers(0, k, n)
    # x = 2 e_y + N(0, 1): the calibrated posterior is softmax(2 x).
    logits = 2.0 * (rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y])
    true_t = 3.0  # predictions are over-confident by a factor 3
    P = np.exp(true_t * logits)
    P /= P.sum(axis=1, keepdims=True)
    classes = list("abcd")
    table = PredictionTable.from_arrays(
        [str(i) for i in range(n)], P, classes, models=["m"], labels=[classes[i] for i in y], folds=np.arange(n) % 5
    )
    ts = TemperatureScaling()
    oof = ts.fit_transform(table)
    assert ts.temperature_["m"] == pytest.approx(true_t, rel=0.1)
    full = ts.transform(table)
    # Out-of-fold output differs from the in-sample one (fold-wise temperatures), both improve the loss.
    assert not np.allclose(oof.probs, full.probs)
    assert log_loss(y, oof.probs[:, 0, :]) < log_loss(y, P)
    with pytest.raises(LabelError):
        TemperatureScaling().fit(make_table(labels=False))
    with pytest.raises(NotFittedError, match="not fitted"):
        TemperatureScaling().transform(table)


def test_sinkhorn_meets_the_marginals():
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(4), size=400)
    P[:, 0] *= 5
    P /= P.sum(axis=1, keepdims=True)
    out, it = sinkhorn(P, np.full(4, 100.0))
    np.testing.assert_allclose(out.sum(axis=0), 100.0, atol=1e-5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert it > 1


def test_sinkhorn_equalizer_by_group():
    table = make_table(n_images=200, seed=4)
    eq = SinkhornEqualizer(by="manip")
    out = eq.fit_transform(table)
    assert out.models == ("mean",)
    manip = table.manip
    for flag in (0, 1):
        np.testing.assert_allclose(out.probs[manip == flag, 0, :].sum(axis=0), 10.0, atol=1e-5)
    with pytest.raises(ConfigError, match="sum to 12"):
        SinkhornEqualizer(quota=[3, 3, 3, 3, 0, 0, 0, 0, 0, 0]).fit_transform(table)
    # A class nobody predicts cannot be given rows.
    P = np.tile([0.5, 0.5, 0.0], (6, 1))
    t = PredictionTable.from_arrays([str(i) for i in range(6)], P, ["a", "b", "c"], models=["m"])
    with pytest.raises(ConfigError, match="zero probability"):
        SinkhornEqualizer().fit_transform(t)
