"""The compiled step loop of the exact two-row trainer (numba), at module level so that numba's on-disk
cache is reused across processes (functions defined inside a function get a new cache entry each time).

Imported only when numba is used; :mod:`alignment_dynamics.dpo.two_row` holds the documented API and a
pure-PyTorch loop computing exactly the same recursion.
"""

import math

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def sigmoid(x):
    if x >= 0:
        z = math.exp(-x)
        return 1.0 / (1.0 + z)
    z = math.exp(x)
    return z / (1.0 + z)


@numba.njit(cache=True, inline="always")
def dloss(delta, beta, code, eps):
    z = beta * delta
    if code == 0:
        return -beta * ((1.0 - eps) * sigmoid(-z) - eps * sigmoid(z))
    if code == 1:
        return -beta * ((1.0 - eps) * sigmoid(-z) + eps * sigmoid(z)) / (1.0 - 2.0 * eps)
    if code == 2:
        return -beta if 1.0 - z > 0.0 else 0.0
    return 2.0 * (delta - 1.0 / (2.0 * beta))


@numba.njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def step_loop(H, s, rows, counts, lr, beta, code, eps, opt, momentum, b1, b2, aeps, V, dots):
    R, T, _ = rows.shape
    d = H.shape[1]
    for r in numba.prange(R):
        v = V[r, 0].copy()
        g = np.zeros_like(v)
        m1 = np.zeros_like(v)
        m2 = np.zeros_like(v)
        cnt = counts[r]
        for t in range(T):
            g[:] = 0.0
            for b in range(cnt):
                i = rows[r, t, b]
                acc = 0.0
                for k in range(d):
                    acc += H[i, k] * v[k]
                dots[r, t, b] = acc
                si = s[i]
                coef = dloss(2.0 * si * acc, beta[r], code, eps) * si / cnt
                for k in range(d):
                    g[k] += coef * H[i, k]
            if opt == 0:  # SGD (PyTorch semantics: buf = g at the first step, then mu*buf + g)
                if momentum > 0.0:
                    for k in range(d):
                        m1[k] = g[k] if t == 0 else momentum * m1[k] + g[k]
                        v[k] -= lr[r] * m1[k]
                else:
                    for k in range(d):
                        v[k] -= lr[r] * g[k]
            else:  # Adam (PyTorch semantics, no weight decay, no amsgrad)
                bc1 = 1.0 - b1 ** (t + 1)
                bc2s = math.sqrt(1.0 - b2 ** (t + 1))
                for k in range(d):
                    m1[k] = b1 * m1[k] + (1.0 - b1) * g[k]
                    m2[k] = b2 * m2[k] + (1.0 - b2) * g[k] * g[k]
                    v[k] -= (lr[r] / bc1) * m1[k] / (math.sqrt(m2[k]) / bc2s + aeps)
            V[r, t + 1] = v

