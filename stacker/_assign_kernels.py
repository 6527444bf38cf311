"""Loops of the exact class-balanced assignment, compiled with numba when it is installed.

Every function here is plain Python over NumPy arrays written in the subset numba
compiles; without numba (the optional ``fast`` extra) the same code runs
interpreted, which is exact but slow on large inputs.  Compiled functions are
cached on disk (``cache=True``) and compiled lazily on first use, so importing
stacker never pays for numba.

The successive-shortest-path solver :func:`ssp` works on the K class nodes plus a
node ``T`` (index K) standing for the count bounds; see :mod:`stacker.equalize`
for the formulation.  Potentials ``h`` are kept such that every row's class is an
argmax of ``s[i] + h[:K]``: the prices of the public API are ``h[K] - h[:K]``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

#: Probabilities below this are treated as this value (log = -690.8).
TINY = 1e-300
#: Rows per class pair kept from the first scan of the exact repair (see :func:`ssp`).
_HEAD = 4
#: Rows sampled per class short of rows in a bulk price step (see :func:`refine_prices`).
_REFINE_SAMPLE = 32_768

__all__ = [
    "TINY",
    "ssp",
    "bulk_argmax",
    "certificate_violations",
    "has_bad_rows",
    "score_violations",
    "HAVE_NUMBA",
    "PYTHON",
    "JIT_MIN_WORK",
    "kernels",
]

#: Whether numba can be imported (looked up, not imported: importing stacker never pays for numba).
HAVE_NUMBA = importlib.util.find_spec("numba") is not None


def _select(s, assign, a, b, L, mem):
    """Rows of ``mem`` (members of class ``a``, ascending) with the ``L`` smallest keys
    ``s[r, a] - s[r, b]``, sorted by (key, row); ties at the cut are all kept.
    Returns the rows and whether every member was taken."""
    m = mem.shape[0]
    keys = np.empty(m)
    for j in range(m):
        r = mem[j]
        keys[j] = s[r, a] - s[r, b]
    if L < m:
        thr = np.partition(keys, L - 1)[L - 1]
        n_sel = 0
        for j in range(m):
            if keys[j] <= thr:
                n_sel += 1
        sel = np.empty(n_sel, np.int64)
        ks = np.empty(n_sel)
        q = 0
        for j in range(m):
            if keys[j] <= thr:
                sel[q] = mem[j]
                ks[q] = keys[j]
                q += 1
    else:
        n_sel = m
        sel = mem.copy()
        ks = keys
    order = np.argsort(ks, kind="mergesort")  # stable: equal keys keep the lower row first
    return sel[order], n_sel == m


def _store(pool, pos, rows):
    n = rows.shape[0]
    if pos + n > pool.shape[0]:
        bigger = np.empty(max(2 * pool.shape[0], pos + n + 16), np.int64)
        bigger[:pos] = pool[:pos]
        pool = bigger
    pool[pos : pos + n] = rows
    return pool, pos + n


def _recompute(s, assign, a, b, order, cstart, pool, pos, pstart, plen, pptr, pfull, plim, nc, ncnt, nseen, M, Arg):
    """Refresh ``M[a, b] = min over rows r in class a of s[r, a] - s[r, b]`` and its row.

    Candidates: the head of the pair's sorted prefix (rows still in a), and the
    rows that entered a since the prefix was built (``nc[a, nseen[a, b]:]``).  The
    prefix is rebuilt from the current members when it runs out, or when the
    newcomers to scan outnumber an eighth of the class.
    """
    while True:
        p = pptr[a, b]
        end = pstart[a, b] + plen[a, b]
        while p < end and assign[pool[p]] != a:
            p += 1
        pptr[a, b] = p
        unseen = ncnt[a] - nseen[a, b]
        if (p >= end and not pfull[a, b]) or unseen > 32 + (cstart[a + 1] - cstart[a]) // 8:
            # Members now: the first members still in a, plus the newcomers still in a.
            n0 = 0
            for j in range(cstart[a], cstart[a + 1]):
                if assign[order[j]] == a:
                    n0 += 1
            n1 = 0
            for j in range(ncnt[a]):
                if assign[nc[a, j]] == a:
                    n1 += 1
            first = np.empty(n0, np.int64)
            q = 0
            for j in range(cstart[a], cstart[a + 1]):
                if assign[order[j]] == a:
                    first[q] = order[j]
                    q += 1
            late = np.empty(n1, np.int64)
            q = 0
            for j in range(ncnt[a]):
                if assign[nc[a, j]] == a:
                    late[q] = nc[a, j]
                    q += 1
            late = np.sort(late)
            # Merge the two ascending runs (sorting the concatenation is quadratic in numba here).
            mem = np.empty(n0 + n1, np.int64)
            i0 = 0
            i1 = 0
            for q in range(n0 + n1):
                if i1 >= n1 or (i0 < n0 and first[i0] <= late[i1]):
                    mem[q] = first[i0]
                    i0 += 1
                else:
                    mem[q] = late[i1]
                    i1 += 1
            sel, full = _select(s, assign, a, b, plim[a, b], mem)
            if p >= end:
                plim[a, b] = 2 * plim[a, b]
            pstart[a, b] = pos
            plen[a, b] = sel.shape[0]
            pptr[a, b] = pos
            pfull[a, b] = full
            nseen[a, b] = ncnt[a]
            pool, pos = _store(pool, pos, sel)
            continue
        best = np.inf
        arg = -1
        if p < end:
            r = pool[p]
            best = s[r, a] - s[r, b]
            arg = r
        for j in range(nseen[a, b], ncnt[a]):
            r = nc[a, j]
            if assign[r] == a:
                key = s[r, a] - s[r, b]
                if key < best or (key == best and r < arg):
                    best = key
                    arg = r
        M[a, b] = best
        Arg[a, b] = arg
        return pool, pos


def _add_newcomer(nc, ncnt, b, r):
    """Append row ``r`` to class ``b``'s log of arrivals (append-only; grows by doubling)."""
    cap = nc.shape[1]
    if ncnt[b] == cap:
        bigger = np.empty((nc.shape[0], 2 * cap), np.int64)
        bigger[:, :cap] = nc
        nc = bigger
    nc[b, ncnt[b]] = r
    ncnt[b] += 1
    return nc


def ssp(s, assign, h, lower, upper):
    """Exact min-cost repair of ``assign`` to the count bounds, in place.

    Parameters
    ----------
    s : (n, K) float64
        Scores to maximise (log-probabilities or probabilities), all finite.
    assign : (n,) int64
        Start: an argmax of ``s + h[:K]`` per row.  Overwritten with the optimum.
    h : (K + 1,) float64
        Potentials (``h[K]`` is the bound node); updated in place.
    lower, upper : (K,) int64
        Count bounds with ``sum(lower) <= n <= sum(upper)``.

    Returns
    -------
    int
        0 on success, 1 if the bounds cannot be met (no augmenting path).
    """
    n, K = s.shape
    T = K
    cnt = np.zeros(K, np.int64)
    for i in range(n):
        cnt[assign[i]] += 1
    # Flow into the bound node per class, clipped to the bounds; bound edges whose
    # reduced cost is negative are saturated so that all reduced costs start >= 0.
    g = np.empty(K, np.int64)
    e = np.zeros(K + 1, np.int64)
    tot = 0
    for k in range(K):
        gk = min(max(cnt[k], lower[k]), upper[k])
        if gk < upper[k] and h[k] < h[T]:
            gk = upper[k]
        elif gk > lower[k] and h[k] > h[T]:
            gk = lower[k]
        g[k] = gk
        e[k] = cnt[k] - gk
        tot += gk
    e[T] = tot - n
    units = 0
    for v in range(K + 1):
        if e[v] > 0:
            units += e[v]
    if units == 0:
        return 0

    # Members of each class in ascending row order.
    cstart = np.zeros(K + 1, np.int64)
    for k in range(K):
        cstart[k + 1] = cstart[k] + cnt[k]
    order = np.empty(n, np.int64)  # counting sort: rows grouped by class, ascending inside
    fill = cstart[:K].copy()
    for i in range(n):
        order[fill[assign[i]]] = i
        fill[assign[i]] += 1

    # Per pair (a, b) a sorted prefix of class a's rows by s[r, a] - s[r, b]: the first
    # _HEAD rows (by key, then row) come from the one scan that also sets M and Arg;
    # longer prefixes are built lazily, when a search needs the pair and its head is used up.
    L0 = 8 + units // K
    pstart = np.zeros((K, K), np.int64)
    plen = np.zeros((K, K), np.int64)
    pptr = np.zeros((K, K), np.int64)
    pfull = np.zeros((K, K), np.bool_)
    plim = np.full((K, K), L0, np.int64)
    M = np.full((K, K), np.inf)
    Arg = np.full((K, K), -1, np.int64)
    hk = np.full((K, K, _HEAD), np.inf)
    hr = np.full((K, K, _HEAD), -1, np.int64)
    hn = np.zeros((K, K), np.int64)
    for i in range(n):
        a = assign[i]
        sa = s[i, a]
        for b in range(K):
            key = sa - s[i, b]
            m = hn[a, b]
            if m < _HEAD or key < hk[a, b, _HEAD - 1]:
                # Insertion; rows come in ascending order, so an equal key stays behind.
                j = min(m, _HEAD - 1)
                while j > 0 and hk[a, b, j - 1] > key:
                    hk[a, b, j] = hk[a, b, j - 1]
                    hr[a, b, j] = hr[a, b, j - 1]
                    j -= 1
                hk[a, b, j] = key
                hr[a, b, j] = i
                if m < _HEAD:
                    hn[a, b] = m + 1
    pool = np.empty(K * K * _HEAD + 1024, np.int64)
    pos = 0
    for a in range(K):
        for b in range(K):
            if a == b:
                continue
            m = hn[a, b]
            pstart[a, b] = pos
            plen[a, b] = m
            pptr[a, b] = pos
            pfull[a, b] = m == cnt[a]
            for j in range(m):
                pool[pos] = hr[a, b, j]
                pos += 1
            if m > 0:
                M[a, b] = hk[a, b, 0]
                Arg[a, b] = hr[a, b, 0]
    nc = np.empty((K, 16), np.int64)
    ncnt = np.zeros(K, np.int64)
    nseen = np.zeros((K, K), np.int64)
    stale = np.zeros((K, K), np.bool_)  # M[a, b] lost its row; refresh before use

    dist = np.empty(K + 1)
    done = np.zeros(K + 1, np.bool_)
    used = np.zeros(K + 1, np.bool_)
    pred = np.empty(K + 1, np.int64)
    predrow = np.empty(K + 1, np.int64)
    order_t = np.empty(K + 1, np.int64)
    while True:
        # One Dijkstra search from every node with an excess at once (a super-source),
        # over all reachable nodes; then augment along vertex-disjoint shortest paths.
        any_src = False
        for v in range(K + 1):
            dist[v] = np.inf
            done[v] = False
            used[v] = False
            pred[v] = -1
            predrow[v] = -1
            if e[v] > 0:
                dist[v] = 0.0
                any_src = True
        if not any_src:
            return 0
        n_t = 0
        D = 0.0
        while True:
            u = -1
            du = np.inf
            for v in range(K + 1):
                if not done[v] and dist[v] < du:
                    du = dist[v]
                    u = v
            if u < 0:
                break
            done[u] = True
            D = du
            if e[u] < 0:
                order_t[n_t] = u  # deficits in settling order: by distance, then class index
                n_t += 1
            if u < K:
                hu = h[u]
                for b in range(K):
                    if b == u or done[b]:
                        continue
                    if stale[u, b]:
                        # Refreshed only now that a search needs it (lazy: most never are).
                        pool, pos = _recompute(
                            s,
                            assign,
                            u,
                            b,
                            order,
                            cstart,
                            pool,
                            pos,
                            pstart,
                            plen,
                            pptr,
                            pfull,
                            plim,
                            nc,
                            ncnt,
                            nseen,
                            M,
                            Arg,
                        )
                        stale[u, b] = False
                    if Arg[u, b] >= 0:
                        rc = M[u, b] + hu - h[b]
                        nd = du + (rc if rc > 0.0 else 0.0)
                        if nd < dist[b]:
                            dist[b] = nd
                            pred[b] = u
                            predrow[b] = Arg[u, b]
                if g[u] < upper[u] and not done[T]:
                    rc = hu - h[T]
                    nd = du + (rc if rc > 0.0 else 0.0)
                    if nd < dist[T]:
                        dist[T] = nd
                        pred[T] = u
                        predrow[T] = -1
            else:
                for k in range(K):
                    if not done[k] and g[k] > lower[k]:
                        rc = h[T] - h[k]
                        nd = du + (rc if rc > 0.0 else 0.0)
                        if nd < dist[k]:
                            dist[k] = nd
                            pred[k] = T
                            predrow[k] = -1
        if n_t == 0:
            return 1
        # Potentials: every reachable node by its distance, the others by the largest one;
        # reduced costs stay >= 0 and every edge of the search tree has reduced cost 0.
        for v in range(K + 1):
            h[v] += dist[v] if dist[v] < D else D
        for j in range(n_t):
            tgt = order_t[j]
            # The tree path to tgt, taken only if it shares no node with a path taken
            # this round (so every edge on it still has reduced cost 0 and its row is
            # still the pair's cheapest).
            v = tgt
            free = True
            while True:
                if used[v]:
                    free = False
                    break
                if pred[v] < 0:
                    break
                v = pred[v]
            if not free:
                continue
            src = v
            v = tgt
            while True:
                used[v] = True
                if v == src:
                    break
                v = pred[v]
            e[src] -= 1
            e[tgt] += 1
            v = tgt
            while v != src:
                u = pred[v]
                if u == T:
                    g[v] -= 1
                elif v == T:
                    g[u] += 1
                else:
                    r = predrow[v]
                    assign[r] = v
                    for b in range(K):
                        if b != u and Arg[u, b] == r:
                            stale[u, b] = True
                    nc = _add_newcomer(nc, ncnt, v, r)
                    for c in range(K):
                        if c != v and not stale[v, c]:
                            key = s[r, v] - s[r, c]
                            if key < M[v, c] or (key == M[v, c] and r < Arg[v, c]):
                                M[v, c] = key
                                Arg[v, c] = r
                v = u


def _weights(h, K, log_mode):
    """Per-class factors: ``exp(h - max h)`` (multiplicative) when that cannot underflow."""
    hmax = h[0]
    hmin = h[0]
    for k in range(K):
        hmax = max(hmax, h[k])
        hmin = min(hmin, h[k])
    mult = log_mode and (hmax - hmin) < 600.0
    w = np.empty(K)
    for k in range(K):
        w[k] = np.exp(h[k] - hmax) if mult else h[k]
    return w, mult


def _value(x, w, mult, log_mode):
    """One row value of ``score + h`` (or its multiplicative form, see :func:`_weights`)."""
    if mult:
        return max(x, TINY) * w
    if log_mode:
        return np.log(max(x, TINY)) + w
    return x + w


def bulk_argmax(P, h, log_mode):
    """Per row: argmax of ``score + h`` (lowest class on ties), how far it leads the
    runner-up; the class counts; and whether some row is invalid (:func:`has_bad_rows`:
    the other outputs are then meaningless).

    ``score`` is ``log(max(P, TINY))`` when ``log_mode`` else ``P``.  In log mode the
    argmax is taken on ``max(P, TINY) * exp(h - max h)`` when that cannot underflow,
    so no logarithm is computed; the lead is then the ratio best / runner-up (else
    the difference).  The lead is a lower bound of the true one (0 where the
    runner-up's weighted value is too small for an accurate ratio): the solver
    freezes rows by it and certifies them from it.
    """
    n, K = P.shape
    assign = np.empty(n, np.int64)
    margin = np.empty(n)
    cnt = np.zeros(K, np.int64)
    w, mult = _weights(h, K, log_mode)
    rows_ok = True
    low_all = 0.0
    sum_all = 0.0
    for i in range(n):
        # Branch-free running top two (selects, not jumps: the argmax is unpredictable);
        # strict > keeps the lowest class among tied maxima.  The row's sum and minimum
        # validate it in the same pass (see has_bad_rows).
        p = P[i, 0]
        total = p
        low = min(p, 0.0)
        best = _value(p, w[0], mult, log_mode)
        second = -np.inf
        arg = 0
        for k in range(1, K):
            p = P[i, k]
            total += p
            low = min(low, p)
            x = _value(p, w[k], mult, log_mode)
            gt = x > best
            second = max(second, min(best, x))
            arg = k if gt else arg
            best = x if gt else best
        # NaN fails total > 0; a negative value shows in low_all, an infinity in sum_all.
        rows_ok &= total > 0.0
        low_all = min(low_all, low)
        sum_all += total
        assign[i] = arg
        cnt[arg] += 1
        if mult:
            margin[i] = best / second if second > 1e-290 else 0.0
        else:
            margin[i] = best - second
    bad = not (rows_ok and low_all >= 0.0 and np.isfinite(sum_all))
    return assign, margin, cnt, bad


def certificate_violations(P, assign, h, log_mode, tol):
    """Number of rows whose class is not an argmax of ``score + h`` within ``tol``
    (relative to ``1 + |best|`` on the score scale)."""
    n, K = P.shape
    w, mult = _weights(h, K, log_mode)
    bad = 0
    for i in range(n):
        best = -np.inf
        mine = 0.0
        for k in range(K):
            x = P[i, k]
            if mult:
                v = max(x, TINY) * w[k]
            elif log_mode:
                v = np.log(max(x, TINY)) + w[k]
            else:
                v = x + w[k]
            if v > best:
                best = v
            if k == assign[i]:
                mine = v
        if mult:
            # log(mine) >= log(best) - tol (1 + |log best|), without taking logs for the usual rows.
            if mine < best and np.log(mine) < np.log(best) - tol * (1.0 + abs(np.log(best))):
                bad += 1
        elif mine < best - tol * (1.0 + abs(best)):
            bad += 1
    return bad


def refine_prices(S, assign, h, lower, upper, sweeps):
    """Bulk dual steps before the exact repair: each sweep, every class over its upper
    bound raises its price just enough to shed half its excess, every class under its
    lower bound lowers it to win half its shortfall (all at once, from the same top-two
    scores).  Leaves ``assign`` the argmax of ``S + h`` (lowest class on ties).  Only a
    warm start: :func:`ssp` makes the result exact whatever these steps do.

    The step sizes are order statistics of per-class leads; for a class short of rows
    they come from a strided sample of at most ``_REFINE_SAMPLE`` rows (one row-major
    pass for all such classes), so a sweep costs O(n K) whatever the number of classes
    off their bounds."""
    n, K = S.shape
    best = np.empty(n)
    second = np.empty(n)
    stride = max(1, n // _REFINE_SAMPLE)
    ns = (n + stride - 1) // stride
    for sweep in range(sweeps + 1):
        cnt = np.zeros(K, np.int64)
        for i in range(n):
            b1 = S[i, 0] + h[0]
            b2 = -np.inf
            arg = 0
            for k in range(1, K):
                v = S[i, k] + h[k]
                gt = v > b1
                b2 = max(b2, min(b1, v))
                arg = k if gt else arg
                b1 = v if gt else b1
            assign[i] = arg
            best[i] = b1
            second[i] = b2
            cnt[arg] += 1
        if sweep == sweeps:
            return
        over = np.zeros(K, np.bool_)
        short = np.empty(K, np.int64)  # class -> its slot among the classes short of rows, or -1
        n_short = 0
        for k in range(K):
            over[k] = cnt[k] > upper[k]
            short[k] = -1
            if cnt[k] < lower[k]:
                short[k] = n_short
                n_short += 1
        if n_short == 0 and not over.any():
            return
        step = np.zeros(K)
        # Over-full classes: the leads of their members, bucketed by class in one pass.
        start = np.zeros(K + 1, np.int64)
        for k in range(K):
            start[k + 1] = start[k] + (cnt[k] if over[k] else 0)
        leads = np.empty(start[K])
        fill = start[:K].copy()
        for i in range(n):
            a = assign[i]
            if over[a]:
                leads[fill[a]] = best[i] - second[i]
                fill[a] += 1
        for k in range(K):
            if over[k]:
                e = (cnt[k] - upper[k] + 1) // 2
                d = np.partition(leads[start[k] : start[k + 1]], e - 1)[e - 1]
                step[k] = -(d + 1e-12 * (1.0 + abs(d)))
        if n_short > 0:
            # Short classes: the gap from each sampled non-member's best to the class.
            gaps = np.empty((n_short, ns))
            ng = np.zeros(n_short, np.int64)
            for i in range(0, n, stride):
                a = assign[i]
                for k in range(K):
                    j = short[k]
                    if j >= 0 and a != k:
                        gaps[j, ng[j]] = best[i] - (S[i, k] + h[k])
                        ng[j] += 1
            for k in range(K):
                j = short[k]
                if j >= 0:
                    # The e-th smallest gap over all rows, as the matching quantile of the sample.
                    e = (lower[k] - cnt[k] + 1) // 2
                    if e <= n - cnt[k] and ng[j] > 0:
                        q = min(max((e * ng[j]) // (n - cnt[k]), 1), ng[j])
                        d = np.partition(gaps[j, : ng[j]], q - 1)[q - 1]
                        step[k] = d + 1e-12 * (1.0 + abs(d))
        for k in range(K):
            h[k] += step[k]


def gather_contested(P, assign, margin, delta, log_mode, cnt):
    """Rows whose lead is at most ``delta`` (the contested ones), their scores, and the
    class counts of the other (frozen) rows (``cnt``: the counts of all rows).

    NumPy in both kernel sets: its vectorised logarithm is several times faster than
    a compiled scalar loop's."""
    K = P.shape[1]
    rows = np.flatnonzero(margin <= delta)
    S = np.take(P, rows, axis=0)  # several times faster than P[rows]
    if log_mode:
        np.maximum(S, TINY, out=S)
        np.log(S, out=S)
    return rows, S, cnt - np.bincount(assign[rows], minlength=K)


def score_violations(S, assign, h, tol):
    """Number of rows of the scores ``S`` whose class is not an argmax of ``S + h``
    within ``tol`` (relative to ``1 + |best|``): the certificate on gathered scores."""
    n, K = S.shape
    bad = 0
    for i in range(n):
        best = -np.inf
        for k in range(K):
            best = max(best, S[i, k] + h[k])
        if S[i, assign[i]] + h[assign[i]] < best - tol * (1.0 + abs(best)):
            bad += 1
    return bad


def margin_is_ratio(h, log_mode):
    """Whether :func:`bulk_argmax` returns leads as ratios (else as score differences)."""
    K = h.shape[0] - 1
    return bool(_weights(h, K, log_mode)[1])


def has_bad_rows(P):
    """True if some row has a NaN, an infinity, a negative value or no positive value."""
    n, K = P.shape
    for i in range(n):
        total = 0.0
        low = 0.0
        for k in range(K):
            x = P[i, k]
            total += x
            low = min(low, x)
        # NaN and inf propagate into the sum; a non-negative row with no positive value sums to 0.
        if not (np.isfinite(total) and low >= 0.0 and total > 0.0):
            return True
    return False


def _np_score_violations(S, assign, h, tol):
    V = S + h[: S.shape[1]]
    best = V.max(axis=1)
    mine = V[np.arange(len(V)), assign]
    return int(np.count_nonzero(mine < best - tol * (1.0 + np.abs(best))))


def _np_has_bad_rows(P):
    return bool(not np.isfinite(P).all() or (P < 0).any() or (P.sum(axis=1) <= 0).any())


def _np_values(P, h, log_mode):
    K = P.shape[1]
    return (np.log(np.maximum(P, TINY)) if log_mode else P) + h[:K]


def _np_bulk_argmax(P, h, log_mode):
    if _np_has_bad_rows(P):  # the caller reports the bad rows; nothing else is used
        return np.zeros(len(P), np.int64), np.zeros(len(P)), np.zeros(P.shape[1], np.int64), True
    V = _np_values(P, h, log_mode)
    assign = np.argmax(V, axis=1).astype(np.int64)
    top2 = np.partition(V, V.shape[1] - 2, axis=1)[:, -2:]
    cnt = np.bincount(assign, minlength=V.shape[1]).astype(np.int64)
    return assign, top2[:, 1] - top2[:, 0], cnt, False


def _np_certificate_violations(P, assign, h, log_mode, tol):
    V = _np_values(P, h, log_mode)
    best = V.max(axis=1)
    mine = V[np.arange(len(V)), assign]
    return int(np.count_nonzero(mine < best - tol * (1.0 + np.abs(best))))


class _Namespace:
    """One set of kernels (interpreted or compiled)."""

    ssp: Any
    bulk_argmax: Any
    certificate_violations: Any
    has_bad_rows: Any
    gather_contested: Any
    refine_prices: Any
    score_violations: Any
    margin_is_ratio: Any

    def __init__(self, **fns: Any) -> None:
        self.__dict__.update(fns)


#: Interpreted versions: the SSP loop in Python, the passes in NumPy.
PYTHON = _Namespace(
    ssp=ssp,
    bulk_argmax=_np_bulk_argmax,
    certificate_violations=_np_certificate_violations,
    has_bad_rows=_np_has_bad_rows,
    gather_contested=gather_contested,
    refine_prices=refine_prices,
    score_violations=_np_score_violations,
    margin_is_ratio=lambda h, log_mode: False,
)

#: Below this many probabilities (rows x classes) the interpreted kernels are used
#: unless the compiled ones are already loaded: a first, cold numba compilation
#: takes seconds, while the challenge's 2,640 x 10 table solves interpreted in ~30 ms.
JIT_MIN_WORK = 200_000


class _Kernels:
    """Chooses compiled (numba, lazily compiled, cached on disk) or interpreted kernels.

    ``STACKER_JIT=1`` always compiles, ``STACKER_JIT=0`` never does; by default
    compiled kernels serve inputs of at least :data:`JIT_MIN_WORK` values, and any
    input once they are loaded in the process.
    """

    def __init__(self) -> None:
        self._compiled: _Namespace | None = None

    def compile(self) -> _Namespace:
        """Compile (or load from the on-disk cache) and return the compiled kernels (:mod:`stacker._assign_jit`).

        This module's functions are never rebound: the interpreted kernels stay interpreted.
        """
        if self._compiled is None:
            if not HAVE_NUMBA:
                return PYTHON
            from stacker._assign_jit import KERNELS

            self._compiled = KERNELS
        return self._compiled

    def pick(self, work: int) -> _Namespace:
        """The kernels to use for an input of ``work`` values (see the class docstring)."""
        import os

        mode = os.environ.get("STACKER_JIT", "auto").strip().lower()
        if not HAVE_NUMBA or mode in ("0", "never", "false", "no"):
            return PYTHON
        if self._compiled is not None or work >= JIT_MIN_WORK or mode in ("1", "always", "true", "yes"):
            return self.compile()
        return PYTHON


#: ``kernels.pick(n * k).ssp(...)`` etc.
kernels = _Kernels()
