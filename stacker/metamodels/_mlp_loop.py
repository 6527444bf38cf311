"""A lean torch training loop for the Keras MLP member, equivalent to ``model.fit``.

Keras 3's ``fit`` on the torch backend adds callbacks, metric trackers and the
layer-call and optimizer machinery to every step: on one thread a 91-128-10
network in batches of 256 took 287 ms per epoch under ``model.fit`` and 153 ms
in this loop (``benchmarks/bench_fit_parts.py``), and the cost benchmark's 60
Keras fits took 341 s here against 734 s for ``model.fit`` on two threads.  This loop runs the same
computation on the model's own weights with plain tensors:

* the initial weights are those Keras drew when it built the model;
* the loss is Keras's: softmax probabilities clipped to ``[1e-7, 1 - 1e-7]``,
  negative log, times the sample weight, summed over the batch and divided by
  the batch size (``"sum_over_batch_size"``);
* the updates are Keras's Adam (``epsilon=1e-7``, bias correction folded into
  the step size) and SGD with Nesterov momentum, written out below;
* one shuffled pass per epoch in batches of ``batch_size`` (the last one
  partial), inverted dropout after each hidden layer in training;
* ``EarlyStopping(patience, restore_best_weights=True)`` on the weighted
  validation loss, with Keras's counting rule, and the best weights restored.

Only the random streams differ (shuffling and dropout draw from torch's
generator, seeded).  The trained weights are written back into the Keras model,
which is what is saved (``.keras``) and what predicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stacker.errors import ConfigError

__all__ = ["fit_dense_stack", "EPSILON"]

#: Keras's fuzz factor: probability clipping in the loss, Adam's epsilon.
EPSILON = 1e-7


#: SELU's constants (Klambauer et al.; the values Keras and torch use).
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _exp_linear():
    """ELU/SELU as one autograd function built on ``exp``.

    torch's CPU ``elu``/``selu`` kernels go through a scalar ``expm1``, slow
    enough to be a large part of a small network's step: forward and backward
    on 512 x 60 took 345 us with ``F.elu`` and 207 us with this function
    (``benchmarks/bench_fit_parts.py``).  ``exp(min(x, 0)) - 1`` differs from ``expm1`` by under
    1e-7 in absolute terms, and the backward pass reuses the forward output.
    """
    import torch

    class ExpLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha: float, scale: float):
            pos = x > 0
            neg = torch.exp(torch.clamp(x, max=0.0)).sub_(1.0).mul_(alpha * scale)
            ctx.save_for_backward(pos, neg)
            ctx.constants = (alpha, scale)
            return torch.where(pos, x * scale, neg)

        @staticmethod
        def backward(ctx, grad):
            pos, neg = ctx.saved_tensors
            alpha, scale = ctx.constants
            return grad * torch.where(pos, scale, neg + alpha * scale), None, None

    return ExpLinear.apply


def _activation(name: str):
    import torch
    import torch.nn.functional as F

    if name in ("elu", "selu"):
        exp_linear = _exp_linear()
        alpha, scale = (1.0, 1.0) if name == "elu" else (SELU_ALPHA, SELU_SCALE)
        return lambda h: exp_linear(h, alpha, scale)
    table = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "linear": lambda h: h}
    if name not in table:
        raise ConfigError(f"activation {name!r} is not supported by the torch loop; use trainer='keras'")
    return table[name]


class _Adam:
    def __init__(self, params, lr: float, beta_1: float = 0.9, beta_2: float = 0.999) -> None:
        import torch

        self.params, self.lr, self.b1, self.b2, self.t = params, lr, beta_1, beta_2, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        self.t += 1
        alpha = self.lr * np.sqrt(1.0 - self.b2**self.t) / (1.0 - self.b1**self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            m.add_(g - m, alpha=1.0 - self.b1)
            v.add_(g * g - v, alpha=1.0 - self.b2)
            p.data.addcdiv_(m, v.sqrt().add_(EPSILON), value=-alpha)


class _NesterovSGD:
    def __init__(self, params, lr: float, momentum: float = 0.9) -> None:
        import torch

        self.params, self.lr, self.mu = params, lr, momentum
        self.m = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        for p, m in zip(self.params, self.m):
            g = p.grad
            m.mul_(self.mu).add_(g, alpha=-self.lr)  # m = mu * m - lr * g
            p.data.add_(self.mu * m - self.lr * g)  # var += mu * m - lr * g


def fit_dense_stack(
    weights: list[np.ndarray],
    *,
    activation: str,
    dropout: float,
    optimizer: str,
    learning_rate: float,
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    w_val: np.ndarray | None,
    batch_size: int,
    epochs: int,
    patience: int,
    seed: int,
) -> tuple[list[np.ndarray], int]:
    """Train a stack of dense layers given as Keras weights ``[W1, b1, ..., Wout, bout]``.

    Hidden layers use ``activation`` (and ``dropout`` after each); the last
    layer feeds a softmax.  Returns the trained (best, when validating) weights
    in the same layout and the number of epochs run.
    """
    import torch

    act = _activation(activation)
    gen = torch.Generator().manual_seed(int(seed))
    params = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in weights]
    n_hidden = len(params) // 2 - 1

    def logits(x: Any, train: bool):
        h = x
        for i in range(n_hidden):
            h = act(torch.addmm(params[2 * i + 1], h, params[2 * i]))
            if train and dropout > 0:
                keep = (torch.rand(h.shape, generator=gen) >= dropout).to(h.dtype).mul_(1.0 / (1.0 - dropout))
                h = h * keep
        return torch.addmm(params[-1], h, params[-2])

    def loss_of(z: Any, t: Any, sw: Any):
        p = torch.softmax(z, dim=1).clamp(EPSILON, 1.0 - EPSILON)
        return -(torch.log(p.gather(1, t[:, None]))[:, 0] * sw).sum() / len(t)

    if optimizer == "adam":
        opt: _Adam | _NesterovSGD = _Adam(params, learning_rate)
    elif optimizer == "sgd":
        opt = _NesterovSGD(params, learning_rate)
    else:
        raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")

    Xt, yt, wt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64)), torch.from_numpy(w)
    validating = X_val is not None and len(X_val) > 0 and patience > 0
    if validating:
        Xv, yv, wv = torch.from_numpy(X_val), torch.from_numpy(y_val.astype(np.int64)), torch.from_numpy(w_val)
    n, bs = len(Xt), max(1, int(batch_size))
    best, best_weights, wait, epoch = np.inf, None, 0, -1
    for epoch in range(int(epochs)):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            loss = loss_of(logits(Xt[idx], True), yt[idx], wt[idx])
            for p in params:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                opt.step()
        if not validating:
            continue
        # Keras's EarlyStopping: the wait grows every epoch and resets on a strict improvement.
        with torch.no_grad():
            current = float(loss_of(logits(Xv, False), yv, wv))
        if best_weights is None:
            best_weights = [p.detach().clone() for p in params]
        wait += 1
        if current < best:
            best, wait = current, 0
            best_weights = [p.detach().clone() for p in params]
            continue
        if wait >= patience and epoch > 0:
            break
    final = best_weights if best_weights is not None else [p.detach() for p in params]
    return [t.numpy().copy() for t in final], epoch + 1
