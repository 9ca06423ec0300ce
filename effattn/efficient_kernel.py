"""The linear programs of efficient attention (efficient.py), one per query row, in numba.

Per head, the constraint rows Rt = Rᵀ (r × n, R an orthonormal basis of span(V ∪ {1})) are
shared by every query row a: Rᵀp = Rᵀa, p ≥ 0, maximise aᵀp. Each row runs a primal simplex
on a compact dense tableau (x_B + T x_N = b̄, T = B⁻¹N, r × (n − r)):
  1. start: the head's basis B0 and tableau, by Gauss–Jordan with complete pivoting on Rᵀ
     (well conditioned; once per head, copied for each row);
  2. crossover from p = a, feasible but with up to n non-zeros: each positive non-basic
     variable moves the way its reduced cost favours until it reaches 0, or a basic variable
     reaches 0 first and the two swap (the objective never falls);
  3. simplex from that vertex: Dantzig pricing, Bland's rule after a degenerate step (no
     cycling), ratio tests that ignore entries below a pivot tolerance;
  4. verify p ≥ 0 and |Rᵀp − Rᵀa| ≤ 1e-12; if that fails, polish (the basic values afresh
     from the final basis by Gauss–Jordan) and verify again. A row still failing is solved
     again from p = a under Bland's rule with the tableau recomputed after every exchange; if
     that fails too it stays a itself (feasible, not sparse; status 2): no returned row
     violates the constraints.
Heads are the tasks of one parallel loop; each row is solved from the head's starting tableau
with arrays of its own, so results do not depend on scheduling, on the other rows or on how
many heads are solved together. Without numba the same functions run as
plain Python (slowly).
"""

import numpy as np

try:  # numba compiles these loops; without it they run as they are
    from numba import njit, prange
    COMPILED = True
except ImportError:
    COMPILED = False
    prange = range

    def njit(*args, **kwargs):
        """Stand-in for numba.njit, used bare or with options: returns the function itself."""
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda function: function

__all__ = ["COMPILED", "HEADS_PER_CHUNK", "solve_heads"]

# R is orthonormal, so tableau entries are O(1): an entry below this is rounding, never a pivot.
PIVOT_TOLERANCE = 1e-9
SINGULAR_PIVOT = 1e-12        # a factorisation pivot below this: the basis is singular
# Objective coefficients are probabilities (≤ 1): a reduced cost below this gains nothing real.
OPTIMALITY_TOLERANCE = 1e-12
DEGENERATE_STEP = 1e-15       # a step this short is degenerate: Bland's rule until a real one
# Verification of each row: loose next to rounding (~1e-15), tight next to the 1e-6 promised
# on row sums.
NEGATIVE_TOLERANCE = 1e-10    # basic values in [−this, 0) are rounding of a 0
ROUNDING_ZERO = 1e-15         # and so are those in [0, this]: both are set to 0
RESIDUAL_TOLERANCE = 1e-12    # max |Rᵀp − Rᵀa| of a returned row
# Heads differ in cost (10 to 60 exchanges a row) and a core may be busy: the parallel loop
# hands heads out one at a time as threads free up, not in one equal share per thread.
HEADS_PER_CHUNK = 1


@njit(cache=True)
def _exchange(T, reduced, i, q):
    """Jordan exchange on the compact tableau: basic row i and non-basic column q swap."""
    r, k = T.shape
    inverse = 1.0 / T[i, q]
    pivot_row = np.empty(k)  # a copy, so that the updates below cannot alias it (they vectorise)
    for c in range(k):
        T[i, c] *= inverse
        pivot_row[c] = T[i, c]
    T[i, q] = inverse
    pivot_row[q] = 0.0       # column q is written separately below
    for s in range(r):
        factor = T[s, q]
        if s == i or factor == 0.0:
            continue
        for c in range(k):
            T[s, c] -= factor * pivot_row[c]
        T[s, q] = -factor * inverse
    factor = reduced[q]
    for c in range(k):
        reduced[c] -= factor * pivot_row[c]
    reduced[q] = -factor * inverse


@njit(cache=True)
def _ratio_test(T, q, direction, x, basis, bland):
    """Moving non-basic column q by +t (direction 1) or −t (−1): the first basic row to reach 0
    and t. Ties go to the largest pivot (stability), or under Bland's rule to the smallest
    variable index (no cycling). Returns (−1, inf) when no basic variable limits the step."""
    best, step = -1, np.inf
    for s in range(T.shape[0]):
        slope = direction * T[s, q]
        if slope > PIVOT_TOLERANCE:
            step = min(step, max(x[basis[s]], 0.0) / slope)
    for s in range(T.shape[0]):
        slope = direction * T[s, q]
        if slope > PIVOT_TOLERANCE and max(x[basis[s]], 0.0) / slope <= step:
            if best < 0 or (basis[s] < basis[best] if bland else slope > direction * T[best, q]):
                best = s
    return best, step


@njit(cache=True)
def _advance(T, reduced, x, basis, nonbasic, q, direction, step, i) -> None:
    """Move non-basic column q by direction·step (basic values follow); then, if i ≥ 0, basic
    row i, now at 0, leaves and column q enters."""
    for s in range(T.shape[0]):
        x[basis[s]] -= direction * step * T[s, q]
    x[nonbasic[q]] += direction * step
    if i >= 0:
        x[basis[i]] = 0.0
        _exchange(T, reduced, i, q)
        basis[i], nonbasic[q] = nonbasic[q], basis[i]


@njit(cache=True)
def _crossover(Rt, a, T, reduced, x, basis, nonbasic, bland, refresh) -> bool:
    """From p = a to a vertex: each positive non-basic variable, largest a first, goes up if
    its reduced cost is positive (until a basic one leaves) and down otherwise (until it is 0,
    or a basic one leaves first). Each column position is visited once."""
    # largest first: those tend to stay in the optimum (fewer exchanges than other orders tried)
    order = np.argsort(-a[nonbasic], kind="mergesort")
    for q in order:
        if x[nonbasic[q]] <= 0.0:
            x[nonbasic[q]] = 0.0
            continue
        direction = 1.0 if reduced[q] > OPTIMALITY_TOLERANCE else -1.0
        i, step = _ratio_test(T, q, direction, x, basis, bland)
        if direction < 0 and step >= x[nonbasic[q]]:  # reaches 0 first: no exchange
            _advance(T, reduced, x, basis, nonbasic, q, direction, x[nonbasic[q]], -1)
            x[nonbasic[q]] = 0.0
            continue
        if i < 0:  # unbounded: impossible while Σp = 1 is a constraint, so rounding broke it
            return False
        _advance(T, reduced, x, basis, nonbasic, q, direction, step, i)
        if refresh and not _refresh(Rt, a, T, reduced, x, basis, nonbasic):
            return False
    return True


@njit(cache=True)
def _entering(reduced, nonbasic, bland) -> int:
    """Dantzig: the largest positive reduced cost; Bland: the smallest variable index with one."""
    best = -1
    for q in range(reduced.shape[0]):
        if reduced[q] > OPTIMALITY_TOLERANCE and (best < 0 or (
                nonbasic[q] < nonbasic[best] if bland else reduced[q] > reduced[best])):
            best = q
    return best


@njit(cache=True)
def _simplex(Rt, a, T, reduced, x, basis, nonbasic, bland_only, refresh) -> bool:
    """Primal simplex from a vertex to an optimal one; False past the iteration cap."""
    bland = bland_only
    for _ in range(50 * (T.shape[0] + T.shape[1])):
        q = _entering(reduced, nonbasic, bland)
        if q < 0:
            return True
        i, step = _ratio_test(T, q, 1.0, x, basis, bland)
        if i < 0:
            return False
        _advance(T, reduced, x, basis, nonbasic, q, 1.0, step, i)
        if refresh and not _refresh(Rt, a, T, reduced, x, basis, nonbasic):
            return False
        bland = bland_only or step <= DEGENERATE_STEP
    return False


@njit(cache=True)
def _eliminate(M, s, i, j) -> None:
    """Gauss–Jordan step on M (r × ·): row i moves to s, and column j becomes e_s."""
    if i != s:
        for c in range(M.shape[1]):
            M[s, c], M[i, c] = M[i, c], M[s, c]
    inverse = 1.0 / M[s, j]
    for c in range(M.shape[1]):
        M[s, c] *= inverse
    for t in range(M.shape[0]):
        factor = M[t, j]
        if t != s and factor != 0.0:
            for c in range(M.shape[1]):
                M[t, c] -= factor * M[s, c]


@njit(cache=True)
def _compact(M, T, nonbasic) -> None:
    """T ← the non-basic columns of the eliminated constraint rows M."""
    for s in range(T.shape[0]):
        for q in range(T.shape[1]):
            T[s, q] = M[s, nonbasic[q]]


@njit(cache=True)
def _starting_tableau(Rt, T, basis, nonbasic) -> bool:
    """A well-conditioned basis for Rᵀp = Rᵀa by complete pivoting, and its tableau T = B⁻¹N."""
    r, n = Rt.shape
    M = Rt.copy()
    used = np.zeros(n, dtype=np.bool_)
    for s in range(r):
        best, row, column = 0.0, -1, -1
        for i in range(s, r):
            for j in range(n):
                if not used[j] and abs(M[i, j]) > best:
                    best, row, column = abs(M[i, j]), i, j
        if not best > SINGULAR_PIVOT:
            return False
        _eliminate(M, s, row, column)
        used[column], basis[s] = True, column
    q = 0
    for j in range(n):
        if not used[j]:
            nonbasic[q], q = j, q + 1
    _compact(M, T, nonbasic)
    return True


@njit(cache=True)
def _reduced_costs(a, T, basis, nonbasic, reduced) -> None:
    """reduced_q = a_N[q] − a_Bᵀ T[:, q]: the objective's rate along non-basic column q."""
    for q in range(T.shape[1]):
        total = a[nonbasic[q]]
        for s in range(T.shape[0]):
            total -= a[basis[s]] * T[s, q]
        reduced[q] = total


@njit(cache=True)
def _refresh(Rt, a, T, reduced, x, basis, nonbasic) -> bool:
    """Recompute T, the reduced costs and the basic values from scratch for the current basis,
    x_B = B⁻¹(Rᵀa − N x_N), so that no rounding carries over from earlier exchanges."""
    r, n = Rt.shape
    M = np.empty((r, n + 1))                     # [Rᵀ | Rᵀa − N x_N]
    for l in range(r):
        M[l, :n] = Rt[l]
        M[l, n] = np.sum(Rt[l] * a)
        for q in range(T.shape[1]):
            M[l, n] -= Rt[l, nonbasic[q]] * x[nonbasic[q]]
    for s in range(r):
        row = s
        for i in range(s + 1, r):
            if abs(M[i, basis[s]]) > abs(M[row, basis[s]]):
                row = i
        if not abs(M[row, basis[s]]) > SINGULAR_PIVOT:
            return False
        _eliminate(M, s, row, basis[s])
    for s in range(r):
        x[basis[s]] = M[s, n]
    _compact(M, T, nonbasic)
    _reduced_costs(a, T, basis, nonbasic, reduced)
    return True


@njit(cache=True)
def _verified(Rt, a, x, basis, p) -> bool:
    """p ← the vertex x with rounding zeroed; True when p ≥ 0 and |Rᵀp − Rᵀa| is rounding."""
    r, n = Rt.shape
    p[:] = 0.0
    for s in range(r):
        value = x[basis[s]]
        if value < -NEGATIVE_TOLERANCE:
            return False
        p[basis[s]] = value if value > ROUNDING_ZERO else 0.0
    for l in range(r):
        residual = 0.0
        for j in range(n):
            residual += Rt[l, j] * (p[j] - a[j])
        if not abs(residual) <= RESIDUAL_TOLERANCE:  # nan fails too
            return False
    return True


@njit(cache=True)
def _solve_row(Rt, T0, basis0, nonbasic0, a, p, safe) -> bool:
    """One query row a from the head's starting tableau; the vertex goes to p. `safe`: Bland's
    rule throughout and a tableau recomputed after every exchange (the fallback)."""
    T, basis, nonbasic, x = T0.copy(), basis0.copy(), nonbasic0.copy(), a.copy()  # own copies
    reduced = np.empty(T.shape[1])
    _reduced_costs(a, T, basis, nonbasic, reduced)
    if not (_crossover(Rt, a, T, reduced, x, basis, nonbasic, safe, safe)
            and _simplex(Rt, a, T, reduced, x, basis, nonbasic, safe, safe)):
        return False
    if _verified(Rt, a, x, basis, p):
        return True
    # polish: the basic values afresh from the final basis, then verify once more
    return _refresh(Rt, a, T, reduced, x, basis, nonbasic) and _verified(Rt, a, x, basis, p)


@njit(parallel=True, cache=True)
def solve_heads(constraint_rows, ranks, attn, out, status):
    """constraint_rows (m, c, n) float64, Rᵀ of head h in [h, :ranks[h]]; ranks (m,) int64,
    each < n; attn (m, n, n) float64, rows summing to 1. Writes out (m, n, n), each row a vertex
    of its polytope, and status (m, n) int8: 0 solved, 1 solved by the fallback, 2 unsolved and
    left as attn's row (feasible, not a vertex)."""
    m, n, _ = attn.shape
    for head in prange(m):  # one task per head: one parallel region, few waits at its end
        r = ranks[head]
        rows = constraint_rows[head, :r]
        start = (rows, np.empty((r, n - r)), np.empty(r, np.int64), np.empty(n - r, np.int64))
        started = _starting_tableau(*start)
        for row in range(n):
            a, p = attn[head, row], out[head, row]
            status[head, row] = 0
            if not (started and _solve_row(*start, a, p, False)):
                status[head, row] = 1
                if not (started and _solve_row(*start, a, p, True)):
                    status[head, row] = 2
                    p[:] = a
