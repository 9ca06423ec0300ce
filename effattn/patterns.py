"""Attention-pattern classes after Kovaleva et al. (2019), for standard and effective maps.

A map (query x key, n real tokens) is one of PATTERNS:
  vertical            most rows put their weight on the same few columns ([CLS], [SEP], ...)
  diagonal            weight on the previous / same / next token (the -1, 0, +1 diagonals)
  vertical+diagonal   both at once
  block               two-sentence input, weight kept inside each sentence, spread over it
  heterogeneous       anything else
One-sentence inputs are never `block`.

Normalisation (both kinds judged alike): every map is turned into row distributions
P[i, j] = |A[i, j]| / sum_j |A[i, j]|. For standard attention this changes nothing (rows are
already non-negative and sum to 1); for effective attention (signed rows that need not sum
to 1) it keeps how strongly each key is weighted, whatever the sign. An all-zero row becomes
uniform.

The classifier is a multinomial logistic regression over FEATURES (interpretable row/column
mass shares), fitted on hand-labelled MiniLM maps (data/pattern_labels/, fitted and
cross-validated by tools/label_patterns.py).
"""
from __future__ import annotations

import numpy as np

PATTERNS = ("vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous")
FEATURES = (
    "special",    # mean row mass on the [CLS] and [SEP] columns
    "top1_col",   # mean row mass on the single most-attended column
    "top3_col",   # mean row mass on the three most-attended columns
    "self",       # mean mass on the main diagonal (query attends itself)
    "prev",       # mean mass on the -1 diagonal (previous token)
    "next",       # mean mass on the +1 diagonal (next token)
    "band",       # max of prev / self / next
    "within",     # mass kept in the query's own sentence beyond uniform (keys off the +-1 band)
    "within_far", # the same with keys more than 4 tokens away only (a wide band is no block)
    "entropy",    # mean row entropy / log(n)
    "row_max",    # mean of the row maxima
    "log_n",      # log(n)
    # what the eye sees on a map drawn relative to its maximum:
    "stripe_med",   # strongest column's median over queries / the map's maximum
    "stripe_q75",   # strongest column's 75th percentile over queries / the map's maximum
    "med_top3",     # summed median mass of the three strongest columns
    "band_vis",     # median over queries of the row's largest -1/0/+1 weight / the map's maximum
    "ink",          # mean weight / the map's maximum (near 1: diffuse; near 0: sparse)
    "argmax_top1",  # share of queries whose largest weight is on the most common column
    "argmax_top3",  # share of queries whose largest weight is on one of the 3 most common columns
    "argmax_band",  # share of queries whose largest weight is within one token of themselves
    # cells drawn visibly dark (> VISIBLE x the map's maximum):
    "stripe_cover",   # largest share of queries with a visible cell in one column
    "stripe_cover3",  # mean of that share over the three most covered columns
    "band_cover",     # share of queries with a visible cell on the -1/0/+1 diagonals
    "clutter",        # visible cells per query outside the band and the 3 most covered columns
    "block_cover",    # visible-cell density in own-sentence minus cross-sentence keys (off band)
)
Z_CLIP = 3.0    # standardised features are clipped to +-Z_CLIP before the linear model
VISIBLE = 0.25  # a cell at a quarter of the map's maximum is clearly visible in a rendered map


def normalise_rows(maps: np.ndarray) -> np.ndarray:
    """(..., query, key) maps -> row distributions |A| / sum |A| (all-zero rows -> uniform)."""
    mags = np.abs(np.asarray(maps, dtype=np.float32))
    sums = mags.sum(axis=-1, keepdims=True)
    n = mags.shape[-1]
    return np.where(sums > 0, mags / np.where(sums > 0, sums, 1.0), np.float32(1.0 / n))


def _segments(n: int, segment_ids, sep_positions) -> tuple[np.ndarray, np.ndarray]:
    """-> (segment of each token (n,), special-token mask (n,)); [CLS] is token 0."""
    if segment_ids is not None:
        seg = np.asarray(segment_ids).astype(np.int64).reshape(-1)
        if seg.shape[0] != n:
            raise ValueError(f"segment_ids has {seg.shape[0]} entries but the maps are {n}x{n}; "
                             "pass the token_type_ids of the same unpadded example.")
        ends = [int(np.flatnonzero(seg == s)[-1]) for s in np.unique(seg)]
        seps = np.array([e for e in ends if e > 0], dtype=np.int64)
    elif sep_positions is not None:
        seps = np.asarray(sep_positions, dtype=np.int64).reshape(-1)
        if seps.size and (seps.min() < 1 or seps.max() >= n):
            raise ValueError(f"sep_positions {seps.tolist()} fall outside 1..{n - 1}.")
        seg = (np.arange(n)[:, None] > seps[None, :-1]).sum(-1) if seps.size else np.zeros(n, int)
    else:
        raise ValueError("classify_patterns needs segment_ids (token_type_ids) or sep_positions "
                         "to know where [SEP] and the sentence boundary are.")
    special = np.zeros(n, dtype=bool)
    special[0] = True
    special[seps] = True
    return seg, special


def pattern_features(maps: np.ndarray, *, segment_ids=None, sep_positions=None) -> np.ndarray:
    """(..., query, key) maps of one example -> (..., len(FEATURES)) float32 features."""
    p = normalise_rows(maps)                                        # (..., query, key)
    n = p.shape[-1]
    seg, special = _segments(n, segment_ids, sep_positions)
    col = p.mean(axis=-2)                                           # (..., key) mean row mass
    top = -np.sort(-col, axis=-1)
    diag = {k: np.diagonal(p, offset=k, axis1=-2, axis2=-1).mean(-1) if n > abs(k)
            else np.zeros(p.shape[:-2], np.float32) for k in (-1, 0, 1)}
    logp = np.log(np.where(p > 0, p, 1.0))
    entropy = -(p * logp).sum(-1).mean(-1) / np.log(max(n, 2))
    feats = {
        "special": col[..., special].sum(-1),
        "top1_col": top[..., 0], "top3_col": top[..., :3].sum(-1),
        "self": diag[0], "prev": diag[-1], "next": diag[1],
        "band": np.maximum(np.maximum(diag[-1], diag[0]), diag[1]),
        "within": _within_excess(p, seg, special, band=1),
        "within_far": _within_excess(p, seg, special, band=4), "entropy": entropy,
        "row_max": p.max(-1).mean(-1),
        "log_n": np.full(p.shape[:-2], np.log(n), np.float32),
        **_visual_features(p), **_cover_features(p, seg, special),
    }
    return np.stack([np.asarray(feats[f], np.float32) for f in FEATURES], axis=-1)


def _visual_features(p: np.ndarray) -> dict:
    """Contrast and argmax features of row distributions p (..., query, key)."""
    n = p.shape[-1]
    peak = p.max(axis=(-2, -1))                                      # (...,)
    med = np.median(p, axis=-2)                                      # (..., key)
    q75 = np.quantile(p, 0.75, axis=-2)
    idx = np.arange(n)
    near = np.abs(idx[:, None] - idx[None, :]) <= 1                  # (query, key) band
    band_row = np.where(near, p, 0).max(-1)                          # (..., query)
    argmax = p.argmax(-1)                                            # (..., query)
    counts = (argmax[..., None] == idx).sum(-2)                      # (..., key) queries per column
    top_counts = -np.sort(-counts, axis=-1)
    return {
        "stripe_med": med.max(-1) / peak, "stripe_q75": q75.max(-1) / peak,
        "med_top3": -np.sort(-med, axis=-1)[..., :3].sum(-1),
        "band_vis": np.median(band_row, axis=-1) / peak, "ink": 1.0 / (n * peak),
        "argmax_top1": top_counts[..., 0] / n, "argmax_top3": top_counts[..., :3].sum(-1) / n,
        "argmax_band": (np.abs(argmax - idx) <= 1).mean(-1),
    }


def _cover_features(p: np.ndarray, seg: np.ndarray, special: np.ndarray) -> dict:
    """Features of the visibly dark cells (p > VISIBLE * max) of p (..., query, key)."""
    n = p.shape[-1]
    dark = p > VISIBLE * p.max(axis=(-2, -1), keepdims=True)         # (..., query, key)
    idx = np.arange(n)
    near = np.abs(idx[:, None] - idx[None, :]) <= 1                  # (query, key)
    cover = dark.mean(-2)                                            # (..., key)
    order = np.argsort(-cover, axis=-1)[..., :3]                     # (..., 3) top columns
    in_top = (idx == order[..., :, None]).any(-2)                    # (..., key)
    clutter = (dark & ~near & ~in_top[..., None, :]).sum((-2, -1)) / n
    same = (seg[:, None] == seg[None, :]) & ~near & ~special[None, :] & ~special[:, None]
    cross = (seg[:, None] != seg[None, :]) & ~special[None, :] & ~special[:, None]
    if cross.any():
        block = ((dark & same).sum((-2, -1)) / max(same.sum(), 1)
                 - (dark & cross).sum((-2, -1)) / cross.sum())
    else:
        block = np.zeros(p.shape[:-2])
    return {"stripe_cover": cover.max(-1),
            "stripe_cover3": np.take_along_axis(cover, order, -1).mean(-1),
            "band_cover": (dark & near).any(-1).mean(-1), "clutter": clutter,
            "block_cover": block}


def _within_excess(p: np.ndarray, seg: np.ndarray, special: np.ndarray, band: int) -> np.ndarray:
    """Mass a query keeps in its own sentence beyond what uniform attention would keep.

    Only non-special rows and keys more than `band` tokens away count, so a diagonal map does
    not look like a block. Per row: (m_same - e * m_all) / (1 - e), with m_all the off-band
    non-special mass, m_same its own-sentence part, e the own-sentence share of those keys.
    0 for one-sentence inputs.
    """
    n = p.shape[-1]
    if np.unique(seg[~special]).size < 2:
        return np.zeros(p.shape[:-2], np.float32)
    idx = np.arange(n)
    keys = (~special[None, :] & ~special[:, None]) & (np.abs(idx[:, None] - idx[None, :]) > band)
    same = keys & (seg[:, None] == seg[None, :])                   # (query, key)
    e = same.sum(-1) / np.maximum(keys.sum(-1), 1)                  # (query,)
    m_all = (p * keys).sum(-1)                                      # (..., query)
    m_same = (p * same).sum(-1)
    rows = ~special & (e < 1) & (keys.sum(-1) > 0)
    excess = (m_same - e * m_all) / np.where(e < 1, 1 - e, 1.0)
    return excess[..., rows].mean(-1)


def preliminary_guess(weights: np.ndarray, *, segment_ids=None, sep_positions=None) -> str:
    """Hand-set rules used only to stratify which maps get labelled (never for results)."""
    f = dict(zip(FEATURES, pattern_features(weights, segment_ids=segment_ids,
                                            sep_positions=sep_positions)))
    vertical, diagonal = f["top3_col"] > 0.5, f["band"] > 0.3
    if vertical and diagonal or f["top3_col"] > 0.35 and f["band"] > 0.2:
        return "vertical+diagonal" if vertical or diagonal else "heterogeneous"
    if vertical or diagonal:
        return "vertical" if vertical else "diagonal"
    return "block" if f["within_far"] > 0.15 else "heterogeneous"


def classify_patterns(maps: np.ndarray, *, segment_ids=None, sep_positions=None,
                      model: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pattern class of every map of one example.

    maps: (..., query, key) standard or effective maps of one unpadded example, e.g.
      (kind, layer, head, n, n); any sign and row sums (see normalise_rows).
    segment_ids: (n,) token_type_ids of the example, or sep_positions: the [SEP] indices.
    model: fitted parameters (default: FITTED, learned from data/pattern_labels/).
    Returns labels (...) array of PATTERNS strings and scores (..., len(PATTERNS)) float32
    class probabilities (block is 0 for one-sentence inputs); scores.max(-1) is the confidence.
    """
    features = pattern_features(maps, segment_ids=segment_ids, sep_positions=sep_positions)
    two_sentences = _n_sentences(np.asarray(maps).shape[-1], segment_ids, sep_positions) > 1
    scores = pattern_scores(features, two_sentences, model=model)
    return np.asarray(PATTERNS)[scores.argmax(-1)], scores


def classify_pattern(weights: np.ndarray, *, segment_ids=None, sep_positions=None) -> tuple[str, float]:
    """One (n, n) map -> (pattern, confidence)."""
    labels, scores = classify_patterns(weights, segment_ids=segment_ids, sep_positions=sep_positions)
    return str(labels), float(scores.max())


def pattern_scores(features: np.ndarray, two_sentences, *, model: dict | None = None) -> np.ndarray:
    """(..., len(FEATURES)) features -> (..., len(PATTERNS)) class probabilities.

    Multinomial logistic regression on standardised features; `block` gets probability 0
    where two_sentences (broadcast against the leading dims) is False.
    """
    model = FITTED if model is None else model
    # clipped: a map far outside the labelled range must not be decided by extrapolation
    z = np.clip((features - model["mean"]) / model["scale"], -Z_CLIP, Z_CLIP)
    logits = z @ np.asarray(model["coef"], np.float32).T + model["intercept"]   # (..., pattern)
    block = np.arange(len(PATTERNS)) == PATTERNS.index("block")
    logits = np.where(block & ~np.asarray(two_sentences, bool)[..., None], -np.inf, logits)
    logits = logits - logits.max(-1, keepdims=True)
    expd = np.exp(logits)
    return (expd / expd.sum(-1, keepdims=True)).astype(np.float32)


def _n_sentences(n: int, segment_ids, sep_positions) -> int:
    seg, special = _segments(n, segment_ids, sep_positions)
    return int(np.unique(seg[~special]).size) if (~special).any() else 1


# BEGIN FITTED (written by `python tools/label_patterns.py evaluate --write-model`)
# multinomial logistic regression, C=1.0, balanced class weights False, on 326 labels
FITTED = {
    "mean": np.array([0.271213, 0.237785, 0.346429, 0.046024, 0.112696, 0.069622, 0.164544, 0.134064, 0.069821,
 0.6398  , 0.372987, 3.731171, 0.315618, 0.466326, 0.289705, 0.238481, 0.056159, 0.445932,
 0.614489, 0.274891, 0.528578, 0.288727, 0.35905 , 0.81377 , 0.017916], np.float32),
    "scale": np.array([0.223238, 0.202447, 0.223986, 0.030151, 0.205146, 0.138374, 0.227408, 0.187229, 0.13359 ,
 0.228856, 0.240586, 0.52033 , 0.235908, 0.272063, 0.228628, 0.271395, 0.039658, 0.312319,
 0.321013, 0.309496, 0.310628, 0.194276, 0.327766, 1.945784, 0.052644], np.float32),
    "coef": np.array([[-0.524728, -0.148112,  1.782086, -0.91145 , -1.203114,  0.24639 , -0.506499, -0.973432,
   0.734129,  0.76825 , -0.385384, -0.600996,  0.024245,  0.10367 ,  0.788058, -0.836239,
   0.892542, -0.171849,  1.319372,  0.314831, -0.341929,  0.774447, -0.935395, -0.067381,
  -0.802199],
 [-0.476867, -0.013964, -1.495784,  0.619365,  0.447755,  0.179466,  0.770486,  1.048217,
  -0.871228, -1.289015,  0.786444,  1.322939,  0.698383, -0.83541 , -0.123077,  0.214833,
  -0.380649,  0.489199, -0.270104,  0.361805,  0.322741, -1.024093,  0.62486 , -0.500628,
   0.484285],
 [ 0.574079, -0.166039,  0.017356,  0.685984,  0.800821,  0.457792,  0.699566, -0.121757,
  -1.143806, -0.24262 , -0.371605, -0.133763,  0.557203,  0.702422, -0.174541,  1.007261,
  -1.397768, -0.404289, -0.537736,  0.353281,  0.51298 ,  0.487809,  0.390449, -0.272198,
   0.08815 ],
 [-0.247366,  0.178516,  0.121654,  0.231627,  0.46728 , -0.567665, -0.234121,  1.113885,
   0.873933,  0.437725, -0.553889, -0.635135, -0.68475 , -0.145649, -0.109776,  0.240111,
   0.357456, -0.092422, -0.029514, -0.585783, -0.466664, -0.041173,  0.246156, -0.216953,
   0.671721],
 [ 0.674882,  0.149598, -0.425312, -0.625527, -0.512741, -0.315983, -0.729431, -1.066914,
   0.40697 ,  0.325658,  0.524434,  0.046956, -0.595082,  0.174966, -0.380665, -0.625965,
   0.528418,  0.179361, -0.482017, -0.444134, -0.027128, -0.196989, -0.326071,  1.05716 ,
  -0.441958]], np.float32),
    "intercept": np.array([-0.982434,  1.930029,  0.40962 , -2.192388,  0.835173], np.float32),
}
# END FITTED
