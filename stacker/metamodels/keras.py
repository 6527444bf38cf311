"""Keras MLP meta-model (Keras 3 on the torch backend), imported lazily.

Keras is an optional dependency (the ``nn`` extra); :func:`import_keras` raises
a :class:`~stacker.errors.ConfigError` naming it when it is missing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from stacker.cv import inner_split
from stacker.errors import ConfigError
from stacker.metamodels._base import MetaModel

__all__ = ["KerasMLPClassifier", "import_keras"]


def import_keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as exc:
        raise ConfigError(f"Keras members need Keras 3 with torch: pip install 'stacker[nn]' ({exc})") from None
    return keras


def check_keras() -> None:
    """Fail now, with the same error as :func:`import_keras`, if Keras or torch is missing; imports neither.

    The Blend checks before any work without paying Keras's import (about 7 s
    here) in a process that only schedules the fits.
    """
    from importlib.util import find_spec

    missing = [m for m in ("keras", "torch") if find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"Keras members need Keras 3 with torch: pip install 'stacker[nn]' (No module named {missing[0]!r})"
        )


class KerasMLPClassifier(MetaModel):
    """A small dense network with softmax output, trained with early stopping.

    Inputs are standardised with statistics stored beside the model.  Early
    stopping watches the loss on ``validation_fraction`` of the training groups
    and restores the best weights.  Native format: ``.keras``.

    By default the network Keras built is trained by a lean torch loop that
    repeats ``model.fit``'s computation (initial weights, loss reduction, Adam /
    Nesterov SGD updates, early stopping; see
    :mod:`stacker.metamodels._mlp_loop`) without Keras's per-step overhead
    (189 against 279 ms per epoch on one thread for a 91-128-10
    network, ``benchmarks/bench_fit_parts.py``); ``trainer="keras"`` calls
    ``model.fit`` itself.  :meth:`fit_many` trains several networks of one
    architecture (a Blend member's fold models) as one batched stack.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (64,)
    activation : str, default "relu"
    dropout : float, default 0.1
        Dropout after each hidden layer.
    optimizer : {"adam", "sgd"}, default "adam"
        SGD uses Nesterov momentum 0.9.
    learning_rate : float, default 1e-3
    batch_size : int, default 256
    epochs : int, default 100
    patience : int, default 5
    validation_fraction : float, default 0.1
    trainer : {"torch", "keras"}, default "torch"
        The lean loop or Keras's own ``fit``.  Only the random streams
        (shuffling, dropout) differ between them.
    random_state : int, default 0
    device : {"cpu", "cuda", "cuda:N"}, default "cpu"
        The torch device of the torch trainer (``trainer="keras"`` uses Keras's own).
    """

    family = "keras"
    suffix = ".keras"

    def __init__(
        self,
        hidden_layer_sizes: tuple[int, ...] = (64,),
        activation: str = "relu",
        dropout: float = 0.1,
        optimizer: str = "adam",
        learning_rate: float = 1e-3,
        batch_size: int = 256,
        epochs: int = 100,
        patience: int = 5,
        validation_fraction: float = 0.1,
        trainer: str = "torch",
        random_state: int = 0,
        device: str = "cpu",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.trainer = trainer
        self.random_state = random_state
        self.device = device

    def _build(self, keras, n_features: int, n_classes: int):
        layers = [keras.Input(shape=(n_features,))]
        for width in self.hidden_layer_sizes:
            layers.append(keras.layers.Dense(int(width), activation=self.activation))
            if self.dropout > 0:
                layers.append(keras.layers.Dropout(float(self.dropout)))
        layers.append(keras.layers.Dense(n_classes, activation="softmax"))
        model = keras.Sequential(layers)
        if self.optimizer == "sgd":
            opt = keras.optimizers.SGD(learning_rate=float(self.learning_rate), momentum=0.9, nesterov=True)
        elif self.optimizer == "adam":
            opt = keras.optimizers.Adam(learning_rate=float(self.learning_rate))
        else:
            raise ConfigError(f"keras optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        return model

    def _prepare(self, X, y, w, groups):
        """Standardise, build the seeded network, split off early-stopping rows: ``(model, FoldData)``."""
        from stacker.metamodels._mlp_loop import FoldData

        if self.trainer not in ("torch", "keras"):
            raise ConfigError(f"keras trainer must be 'torch' or 'keras', got {self.trainer!r}")
        keras = import_keras()
        keras.utils.set_random_seed(self._seed())
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        Z = ((X - self.mean_) / self.scale_).astype(np.float32)
        model = self._build(keras, X.shape[1], len(self.classes_))
        w = w.astype(np.float32)
        if self.validation_fraction > 0 and self.patience and len(y) >= 10:
            tr, va = inner_split(y, groups, self.validation_fraction, self.random_state)
            return model, FoldData(Z[tr], y[tr], w[tr], Z[va], y[va], w[va])
        return model, FoldData(Z, y, w)

    def _seed(self) -> int:
        return int(self.random_state) % (2**31)

    def _loop_settings(self) -> dict:
        return dict(
            activation=self.activation,
            dropout=float(self.dropout),
            optimizer=self.optimizer,
            learning_rate=float(self.learning_rate),
            batch_size=int(self.batch_size),
            epochs=int(self.epochs),
            patience=int(self.patience),
            device=str(self.device),
        )

    def _fit(self, X, y, w, groups) -> None:
        model, d = self._prepare(X, y, w, groups)
        if self.trainer == "torch":
            self._train_stack([self], [model], [d])
            return
        keras = import_keras()
        fit_kw: dict[str, object] = {}
        if d.X_val is not None:
            fit_kw["validation_data"] = (d.X_val, d.y_val, d.w_val)
            fit_kw["callbacks"] = [
                keras.callbacks.EarlyStopping(patience=int(self.patience), restore_best_weights=True)
            ]
        hist = model.fit(
            d.X,
            d.y,
            sample_weight=d.w,
            batch_size=int(self.batch_size),
            epochs=int(self.epochs),
            shuffle=True,
            verbose=0,
            **fit_kw,
        )
        self.n_iter_ = len(hist.history.get("loss", []))
        self.model_ = model

    @classmethod
    def fit_many(cls, estimators, datasets):
        """Fit several networks of one architecture as one batched network (torch trainer).

        A Blend member's K fold models share every hyperparameter but the
        seed; :func:`~stacker.metamodels._mlp_loop.fit_dense_stacks` trains them
        side by side, each on its own rows with its own shuffling, dropout and
        early stopping, so each ends as its own ``fit`` would (up to float
        rounding) at a fraction of the per-step overhead.
        """
        settings = [{k: v for k, v in e.get_params().items() if k != "random_state"} for e in estimators]
        if (
            len(estimators) < 2
            or len(estimators) != len(datasets)
            or any(s != settings[0] for s in settings)
            or settings[0]["trainer"] != "torch"
            or any(type(e) is not cls for e in estimators)
        ):
            return super().fit_many(estimators, datasets)
        models, data = [], []
        for est, (X, y, sw, g) in zip(estimators, datasets):
            model, d = est._prepare(*est._fit_input(X, y, sw, g))
            models.append(model)
            data.append(d)
        cls._train_stack(estimators, models, data)
        return list(estimators)

    @staticmethod
    def _train_stack(estimators, models, data) -> None:
        """Train the built ``models`` on ``data`` with the torch loop, as one stack; set each estimator's model."""
        from stacker.metamodels._mlp_loop import fit_dense_stacks

        results = fit_dense_stacks(
            [m.get_weights() for m in models],
            data,
            seeds=[e._seed() for e in estimators],
            **estimators[0]._loop_settings(),
        )
        for est, model, (weights, n_iter) in zip(estimators, models, results):
            model.set_weights(weights)
            est.model_, est.n_iter_ = model, n_iter

    def _predict_proba(self, X):
        Z = ((X - self.mean_) / self.scale_).astype(np.float32)
        return np.asarray(self.model_.predict(Z, batch_size=4096, verbose=0), dtype=np.float64)

    def _to_bytes(self) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.keras"
            self.model_.save(path)
            return path.read_bytes()

    def _from_bytes(self, data: bytes) -> None:
        keras = import_keras()
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.keras"
            path.write_bytes(data)
            self.model_ = keras.saving.load_model(path, compile=False)

    def _extra_state(self):
        return {"mean": self.mean_, "scale": self.scale_, "n_iter": self.n_iter_}

    def _set_extra_state(self, state):
        self.mean_ = np.asarray(state["mean"], dtype=np.float64)
        self.scale_ = np.asarray(state["scale"], dtype=np.float64)
        self.n_iter_ = int(state.get("n_iter", 0))
