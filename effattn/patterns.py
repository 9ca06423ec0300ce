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

The classifier is a multinomial logistic regression over FEATURES (interpretable mass and
contrast features of P), standardised and clipped to +-Z_CLIP, with parameters FITTED on 416
maps of MiniLM labelled by looking at them plus generated archetypes (effattn.archetypes);
fitted and cross-validated by tools/label_patterns.py. Held-out macro-F1 and how the labels
were made: data/pattern_labels/README.md.
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
    "stripe_med",   # strongest column's median (n//2-th smallest) over queries / the map's max
    "stripe_q75",   # strongest column's 3n//4-th smallest over queries / the map's maximum
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
    # order statistics over queries (one partial sort): the n//2-th and 3n//4-th smallest
    by_key = np.ascontiguousarray(np.swapaxes(p, -1, -2))            # (..., key, query)
    part = np.sort(by_key, axis=-1)                  # a contiguous full sort beats partition
    med, q75 = part[..., n // 2], part[..., (3 * n) // 4]            # (..., key)
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
    if not rows.any():  # too short for keys this far away
        return np.zeros(p.shape[:-2], np.float32)
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
# multinomial logistic regression, C=3.0, balanced class weights True, on 416 labels
FITTED = {
    "mean": np.array([0.273346, 0.246312, 0.348057, 0.045442, 0.118877, 0.065352, 0.166763, 0.138857, 0.071271,
 0.629506, 0.378898, 3.777087, 0.327769, 0.483781, 0.29495 , 0.235048, 0.054088, 0.472087,
 0.638254, 0.256477, 0.537762, 0.283514, 0.353633, 0.879501, 0.019514], np.float32),
    "scale": np.array([0.221925, 0.204115, 0.220552, 0.02927 , 0.216501, 0.133773, 0.235233, 0.187205, 0.13096 ,
 0.238412, 0.246285, 0.52437 , 0.243099, 0.273611, 0.230497, 0.271901, 0.040396, 0.310606,
 0.309686, 0.295123, 0.314394, 0.191943, 0.327023, 2.445657, 0.057909], np.float32),
    "coef": np.array([[-0.894544, -0.638262,  3.384935, -1.139565, -2.333356,  0.505276, -0.723661, -1.361619,
   0.897068,  1.306199, -0.217769, -0.503289,  0.041759, -0.366457,  0.548768, -1.419109,
   1.584707, -0.054023,  1.280864,  0.811013, -0.400681,  0.527411, -1.437706,  0.019575,
  -1.217037],
 [-0.716995, -0.309678, -2.314498,  0.537858,  0.590803, -0.04444 ,  1.618317,  1.397696,
  -0.842468, -2.20319 ,  1.201259,  1.505753,  0.521136, -1.013762,  0.26884 ,  0.882724,
  -0.396055,  1.165732, -0.796616,  0.456363,  0.725577, -0.758795,  0.424609, -0.805177,
   0.668682],
 [ 0.852367, -0.057617, -0.459142,  0.829069,  1.70522 ,  0.821527,  1.594259,  0.24292 ,
  -1.862893, -0.195015, -0.709475, -0.397767,  1.028615,  1.209026, -0.843935,  1.284321,
  -2.392697, -0.409337, -0.568507, -0.535965,  1.032383,  0.115984,  1.297576, -0.427127,
   0.440032],
 [-0.355051,  1.112442,  0.237041,  0.514489,  1.071005, -1.453892, -1.462465,  1.37367 ,
   0.750998,  0.197067, -1.746172, -0.572386, -1.038247,  0.373417,  0.58564 ,  0.058085,
   0.317037, -0.69071 , -0.167998, -0.197207, -1.186067,  0.188527, -0.130412,  0.342401,
   0.651494],
 [ 1.11422 , -0.106886, -0.84834 , -0.741851, -1.033672,  0.171528, -1.026446, -1.652668,
   1.057295,  0.894935,  1.472157, -0.032312, -0.553263, -0.202226, -0.559311, -0.806019,
   0.88701 , -0.011667,  0.252257, -0.534204, -0.171213, -0.073127, -0.154064,  0.870328,
  -0.54317 ]], np.float32),
    "intercept": np.array([-2.033118,  2.642829,  0.803397, -2.120481,  0.707377], np.float32),
}
# END FITTED
