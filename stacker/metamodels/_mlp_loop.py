"""A lean torch training loop for the Keras MLP member, equivalent to ``model.fit``.

Keras 3's ``fit`` on the torch backend adds callbacks, metric trackers and the
layer-call and optimizer machinery to every step: on one thread a 91-128-10
network in batches of 256 took 279 ms per epoch under ``model.fit`` and
189 ms in this loop (``benchmarks/bench_fit_parts.py``).  This loop runs
the same computation on the model's own weights with plain tensors:

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

Only the random streams differ (shuffling and dropout draw from a NumPy PCG64
generator seeded per network).  The trained weights are written back into the
Keras model, which is what is saved (``.keras``) and what predicts.

:func:`fit_dense_stacks` trains several networks of one architecture at once,
their parameters stacked on a leading axis (one batched matrix product per
layer and step), each on its own rows and its own stream: a Blend member's five
fold networks pay the per-operation overhead of one.  The default recipe's 12
Keras members on 5 folds of the cost benchmark's 50,000 rows took 231 s one
network at a time and 164 s batched, with the same epochs and the same fold
log losses (``benchmarks/bench_fit_parts.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from stacker.errors import ConfigError

__all__ = ["fit_dense_stacks", "FoldData", "EPSILON"]

#: Keras's fuzz factor: probability clipping in the loss, Adam's epsilon.
EPSILON = 1e-7


#: SELU's constants (Klambauer et al.; the values Keras and torch use).
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _exp_linear():
    """ELU/SELU as one autograd function built on ``exp``.

    torch's CPU ``elu``/``selu`` kernels go through a scalar ``expm1``, slow
    enough to be a large part of a small network's step: forward and backward
    on 512 x 60 took 337 us with ``F.elu`` and 97 us with this function
    (``benchmarks/bench_fit_parts.py``).  ``exp(min(x, 0)) - 1`` differs from
    ``expm1`` by under 1e-7 in absolute terms, and the backward pass reuses
    ``exp(min(x, 0))`` from the forward one.
    """
    import torch

    class ExpLinear(torch.autograd.Function):
        # Written without torch.where, whose CPU kernel with a scalar operand was the slowest op
        # of a batched step: e = exp(min(x, 0)) is 1 where x > 0, so
        # f(x) = scale * (relu(x) + alpha * (e - 1)) and f'(x) = alpha * scale * e + scale * (1 - alpha) * [x > 0].
        @staticmethod
        def forward(ctx, x, alpha: float, scale: float):
            e = torch.exp(torch.clamp(x, max=0.0))
            pos = (x > 0).to(x.dtype)
            ctx.save_for_backward(e, pos)
            ctx.constants = (alpha, scale)
            return torch.relu(x).add_(e - 1.0, alpha=alpha).mul_(scale)

        @staticmethod
        def backward(ctx, grad):
            e, pos = ctx.saved_tensors
            alpha, scale = ctx.constants
            return grad * (e * (alpha * scale)).add_(pos, alpha=scale * (1.0 - alpha)), None, None

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


class FoldData(NamedTuple):
    """One network's training rows and (optional) early-stopping rows."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    X_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    w_val: np.ndarray | None = None


def _dropout_keep(rngs: list[np.random.Generator], rows: list[int], width: int, rate: float):
    """Inverted-dropout multipliers ``(n_nets, max(rows), width)``, each network from its own stream.

    Each keep/drop decision compares 16 bits of the network's PCG64 output (four
    per raw 64-bit draw) with ``rate``, so the keep probability is ``1 - rate``
    to within 2**-16; the comparison runs in NumPy and one multiply makes the
    float multipliers: 227 us for 5 x 512 x 94 against 651 us from
    torch's ``rand`` (``benchmarks/bench_fit_parts.py``).  Rows past a network's
    ``rows`` are padding (dropped).
    """
    import torch

    threshold = np.int16(int(round(rate * 65536)) - 32768)
    b = max(rows)

    def draws(rng: np.random.Generator, r: int) -> np.ndarray:
        n = r * width
        return rng.bit_generator.random_raw((n + 3) // 4).view(np.int16)[:n].reshape(r, width)

    if min(rows) == b:
        bits = np.stack([draws(rng, b) for rng in rngs])
    else:
        bits = np.full((len(rngs), b, width), -32768, dtype=np.int16)
        for j, (rng, r) in enumerate(zip(rngs, rows)):
            bits[j, :r] = draws(rng, r)
    return torch.from_numpy(bits >= threshold).mul(1.0 / (1.0 - rate))


def _weighted_loss(z, t, sw, counts):
    """Keras's loss per network: clipped softmax, ``-log p[target] * weight`` summed, over the batch size.

    ``z`` is ``(n_nets, batch, k)``; the softmax runs on the transposed
    ``(n_nets, k, batch)`` copy because torch's CPU softmax over a short last
    axis is slow: with the log-likelihood, forward and backward on 5 x 512 x 10,
    474 us over the last axis and 82 us transposed
    (``benchmarks/bench_fit_parts.py``).
    Returns ``(n_nets,)``; a network with ``counts == 0`` gets 0.
    """
    import torch

    p = torch.softmax(z.mT.contiguous(), dim=1)
    picked = p.gather(1, t[:, None, :])[:, 0, :].clamp(EPSILON, 1.0 - EPSILON)
    return -(torch.log(picked) * sw).sum(dim=1) / counts.clamp(min=1)


def fit_dense_stacks(
    weights: Sequence[Sequence[np.ndarray]],
    data: Sequence[FoldData],
    *,
    activation: str,
    dropout: float,
    optimizer: str,
    learning_rate: float,
    batch_size: int,
    epochs: int,
    patience: int,
    seeds: Sequence[int],
    device: str = "cpu",
) -> list[tuple[list[np.ndarray], int]]:
    """Train several networks of one architecture side by side, each on its own data.

    ``weights[j]`` are network ``j``'s Keras weights ``[W1, b1, ..., Wout, bout]``
    (hidden layers use ``activation`` and ``dropout``, the last feeds a softmax),
    ``data[j]`` its rows, ``seeds[j]`` its shuffling and dropout stream.  The
    networks' parameters are stacked on a leading axis and every step is one
    batched matrix product per layer, so a member's K fold networks pay the
    per-operation overhead of one; each network still follows exactly its own
    trajectory (own batches, own Adam step count, own early stopping, after
    which it leaves the stack), so the result for network ``j`` does not depend
    on the others, up to float rounding.

    ``device`` is the torch device the stack trains on (``"cuda"`` on a GPU);
    the random streams stay in NumPy, so a seed draws the same batches anywhere.

    Returns, per network, its trained (best, when validating) weights in the
    same layout and the number of epochs it ran.
    """
    import torch

    if optimizer not in ("adam", "sgd"):
        raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    if not (len(weights) == len(data) == len(seeds)) or not weights:
        raise ValueError("weights, data and seeds must be non-empty and of the same length")
    act = _activation(activation)
    n_nets, n_layers = len(weights), len(weights[0]) // 2
    bs, lr = max(1, int(batch_size)), float(learning_rate)
    rngs = [np.random.default_rng(int(s)) for s in seeds]
    dev = torch.device(device)

    def tensor(a: np.ndarray):
        return torch.from_numpy(a).to(dev)  # no copy on the CPU

    X = [tensor(np.ascontiguousarray(d.X, dtype=np.float32)) for d in data]
    y = [tensor(np.asarray(d.y, dtype=np.int64)) for d in data]
    w = [tensor(np.asarray(d.w, dtype=np.float32)) for d in data]
    n = np.array([len(d.X) for d in data])
    validating = [d.X_val is not None and len(d.X_val) > 0 and patience > 0 for d in data]
    val = [
        (
            tensor(np.ascontiguousarray(d.X_val, dtype=np.float32))[None],
            tensor(np.asarray(d.y_val, dtype=np.int64))[None],
            tensor(np.asarray(d.w_val, dtype=np.float32))[None],
            torch.tensor([float(len(d.X_val))], device=dev),  # type: ignore[arg-type]  # validating: not None
        )
        if v
        else None
        for d, v in zip(data, validating)
    ]

    # Stacked parameters: W (nets, in, out), b (nets, 1, out); optimizer slots alike.
    params = []
    for i in range(2 * n_layers):
        a = np.stack([np.asarray(wt[i], dtype=np.float32) for wt in weights])
        params.append(torch.tensor(a if i % 2 == 0 else a[:, None, :], requires_grad=True, device=dev))
    slots = [[torch.zeros_like(p) for p in params] for _ in range(2 if optimizer == "adam" else 1)]
    steps = np.zeros(n_nets)  # Adam's per-network step count
    active = list(range(n_nets))  # network index of each stacked row
    best: list[list[Any] | None] = [None] * n_nets
    best_loss, wait = np.full(n_nets, np.inf), np.zeros(n_nets, dtype=int)
    ran = np.zeros(n_nets, dtype=int)
    final: list[list[Any] | None] = [None] * n_nets
    buffers = None

    def forward(ps, h, rows: list[int] | None = None):
        """Logits of the networks stacked in ``ps``; ``rows``: each network's real rows, to draw dropout for."""
        for i in range(n_layers - 1):
            h = act(torch.baddbmm(ps[2 * i + 1], h, ps[2 * i]))
            if rows is not None:
                h = h * _dropout_keep([rngs[f] for f in active], rows, h.shape[-1], float(dropout)).to(dev)
        return torch.baddbmm(ps[-1], h, ps[-2])

    def update(rows: list[int]) -> None:
        """One optimizer step for the stacked rows ``rows`` (all of them, normally)."""
        if optimizer == "adam":
            steps[[active[j] for j in rows]] += 1
            t = steps[[active[j] for j in rows]]
            alpha = lr * np.sqrt(1.0 - 0.999**t) / (1.0 - 0.9**t)
            a = torch.tensor(alpha, dtype=torch.float32, device=dev)[:, None, None]
            for p, m, v in zip(params, *slots):
                pd, g, mm, vv = (
                    (p.data, p.grad, m, v)
                    if len(rows) == len(active)
                    else (p.data[rows], p.grad[rows], m[rows], v[rows])
                )
                mm.add_(g - mm, alpha=0.1)
                vv.add_(g * g - vv, alpha=0.001)
                pd.sub_(a * mm / vv.sqrt().add_(EPSILON))
                if len(rows) != len(active):
                    p.data[rows], m[rows], v[rows] = pd, mm, vv
        else:
            for p, m in zip(params, slots[0]):
                grad = p.grad
                assert grad is not None  # after backward()
                pd, g, mm = (p.data, grad, m) if len(rows) == len(active) else (p.data[rows], grad[rows], m[rows])
                mm.mul_(0.9).add_(g, alpha=-lr)  # m = mu * m - lr * g
                pd.add_(0.9 * mm - lr * g)  # var += mu * m - lr * g
                if len(rows) != len(active):
                    p.data[rows], m[rows] = pd, mm

    epoch = -1
    for epoch in range(int(epochs)):
        if not active:
            break
        na = n[active]
        if buffers is None:  # (re)allocated when networks leave the stack; padding rows stay zero
            width = max(int(na.max()), 1)
            buffers = (
                torch.zeros(len(active), width, X[0].shape[1], device=dev),
                torch.zeros(len(active), width, dtype=torch.int64, device=dev),
                torch.zeros(len(active), width, device=dev),
            )
        Xe, ye, we = buffers
        for j, f in enumerate(active):  # one shuffled copy per epoch; batches are then slices
            order = tensor(rngs[f].permutation(int(n[f])))
            torch.index_select(X[f], 0, order, out=Xe[j, : n[f]])
            ye[j, : n[f]] = y[f][order]
            we[j, : n[f]] = w[f][order]
        for lo in range(0, int(na.max()), bs):
            hi = min(lo + bs, int(na.max()))
            counts = np.clip(na - lo, 0, hi - lo)
            stepping = [j for j in range(len(active)) if counts[j] > 0]
            z = forward(params, Xe[:, lo:hi], [int(c) for c in counts] if dropout > 0 else None)
            loss = _weighted_loss(z, ye[:, lo:hi], we[:, lo:hi], tensor(counts.astype(np.float32))).sum()
            for p in params:
                p.grad = None
            loss.backward()
            with torch.no_grad():
                update(stepping)
        left = []
        for j, f in enumerate(active):
            ran[f] = epoch + 1
            if not validating[f]:
                left.append(j)
                continue
            entry = val[f]
            assert entry is not None  # validating[f]
            Xv, yv, wv, nv = entry
            with torch.no_grad():
                current = float(_weighted_loss(forward([p[j : j + 1] for p in params], Xv), yv, wv, nv)[0])
            # Keras's EarlyStopping: the wait grows every epoch and resets on a strict improvement.
            if best[f] is None:
                best[f] = [p[j].detach().clone() for p in params]
            wait[f] += 1
            if current < best_loss[f]:
                best_loss[f], wait[f] = current, 0
                best[f] = [p[j].detach().clone() for p in params]
            elif wait[f] >= patience and epoch > 0:
                continue  # stopped: leaves the stack
            left.append(j)
        if len(left) < len(active):
            with torch.no_grad():
                for j, f in enumerate(active):
                    if j not in left:
                        final[f] = best[f]
                keep = torch.tensor(left, dtype=torch.int64, device=dev)
                params = [p.detach()[keep].clone().requires_grad_() for p in params]
                slots = [[s[keep].clone() for s in group] for group in slots]
            active = [active[j] for j in left]
            buffers = None
    for j, f in enumerate(active):
        final[f] = best[f] if best[f] is not None else [p[j].detach() for p in params]
    out = []
    for f in range(n_nets):
        arrays = [t.cpu().numpy().copy() for t in final[f]]  # type: ignore[union-attr]
        out.append(([a if i % 2 == 0 else a.reshape(-1) for i, a in enumerate(arrays)], int(ran[f])))
    return out
