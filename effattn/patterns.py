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
contrast features of P), standardised and clipped to +-Z_CLIP, with parameters FITTED on the
consensus labels of three blind labelling passes (issue 17; every kind, MiniLM pretrained and
fine-tuned) plus generated archetypes (effattn.archetypes), by
tools/compare_pattern_classifiers.py --write-model, which also compares it with learned models
(nested CV grouped by example). ISSUE4_FITTED keeps the earlier parameters (476 issue-4 labels):
they labelled the shipped caches. Held-out macro-F1 and how the labels were made:
data/pattern_labels/README.md.
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
# multinomial logistic regression, C=3.0, balanced class weights True, on 835 labels
FITTED = {
    "mean": np.array([0.242303, 0.224632, 0.335838, 0.052792, 0.107704, 0.059251, 0.152213, 0.105435, 0.045251,
 0.656333, 0.349113, 3.747472, 0.314862, 0.459404, 0.284301, 0.226318, 0.057819, 0.454824,
 0.639593, 0.259256, 0.520072, 0.292082, 0.361215, 0.958527, 0.01535 ], np.float32),
    "scale": np.array([0.211525, 0.194251, 0.209237, 0.037569, 0.198007, 0.114216, 0.211961, 0.206443, 0.153051,
 0.234724, 0.239021, 0.527658, 0.233971, 0.261436, 0.21988 , 0.241227, 0.044449, 0.295467,
 0.291936, 0.272012, 0.312472, 0.212303, 0.311367, 2.606578, 0.048837], np.float32),
    "coef": np.array([[ 0.092358, -0.415448,  2.296293, -1.005446, -2.399416, -0.115564, -1.899394, -1.255341,
  -0.04187 ,  1.66631 , -0.582193,  0.00798 ,  0.483328,  0.075535,  0.957097, -3.282089,
   0.474998, -0.459704,  1.745069,  0.343954, -0.654713,  1.151133, -0.049912,  1.403866,
  -1.228876],
 [-0.437977,  1.002697, -3.284849, -0.05227 ,  2.755012, -0.291605,  0.592494,  1.281379,
  -2.263482, -1.902286,  1.486395,  0.762268,  0.105552, -0.283209, -0.147595,  1.637703,
  -0.787696,  2.175564, -1.329831,  0.240833, -0.416753,  0.098484, -0.253883,  0.291192,
  -0.612079],
 [ 1.712789, -0.822769,  0.625621,  0.492171,  2.268941,  0.530425,  1.827404, -0.267042,
   0.431581, -0.209947, -1.112329, -0.339306,  3.04603 ,  0.123421, -1.13112 ,  1.525844,
  -2.399953, -0.646779, -0.314556, -0.41987 ,  0.859153, -0.408337,  0.880025, -0.341846,
   0.448182],
 [-2.39373 ,  0.31183 ,  1.570614,  0.934794,  0.083879,  1.497929, -0.126975,  1.981653,
   1.472566,  1.624122, -0.581982, -0.872751, -2.032521,  1.108374, -0.298456,  0.56968 ,
   1.257916, -1.179192, -0.568082, -0.589022, -0.94103 ,  0.185623, -0.271325, -2.658345,
   2.278933],
 [ 1.02656 , -0.07631 , -1.207682, -0.36925 , -2.708417, -1.621188, -0.393529, -1.740652,
   0.401203, -1.178197,  0.790109,  0.441809, -1.602388, -1.024123,  0.620076, -0.451136,
   1.454735,  0.110107,  0.467396,  0.424101,  1.153341, -1.026907, -0.304904,  1.305136,
  -0.886166]], np.float32),
    "intercept": np.array([-1.430829,  4.580626,  2.341891, -8.206469,  2.714826], np.float32),
}
# END FITTED

# The issue-4 parameters (476 labels of one labeller, two blind passes), kept because they
# labelled the shipped caches (head_measures.pattern of data/minilm): the share intervals use
# their confusion on the consensus labels (tools/compare_pattern_classifiers.py).
ISSUE4_FITTED = {
    "mean": np.array([0.267556, 0.241002, 0.343884, 0.046207, 0.1199  , 0.063882, 0.166396, 0.133737, 0.067141,
 0.634259, 0.374052, 3.771113, 0.328173, 0.480343, 0.291886, 0.24203 , 0.056761, 0.462281,
 0.630958, 0.264864, 0.535337, 0.291053, 0.369279, 1.005078, 0.019048], np.float32),
    "scale": np.array([0.224277, 0.207171, 0.223014, 0.029997, 0.21825 , 0.130818, 0.235651, 0.183273, 0.127758,
 0.243479, 0.251541, 0.525869, 0.246242, 0.275599, 0.233134, 0.271007, 0.044078, 0.310812,
 0.311181, 0.296128, 0.317854, 0.204823, 0.329701, 2.680394, 0.056221], np.float32),
    "coef": np.array([[-0.541632, -0.439801,  1.892812, -0.739928, -1.247145,  0.200368, -0.81968 , -1.143094,
   0.50604 ,  0.619398, -0.279303, -0.472495,  0.050769, -0.220704,  0.61365 , -1.130332,
   0.911227, -0.280127,  1.311748,  0.734424, -0.295427,  0.871267, -0.937009, -0.368174,
  -0.786474],
 [-0.677026,  0.030709, -1.420483,  0.368199,  0.336507,  0.071839,  1.085701,  1.172736,
  -0.818774, -1.318306,  1.001261,  1.362581,  0.209187, -0.595846,  0.301289,  0.838174,
  -0.173511,  0.974458, -0.749554,  0.235514,  0.227674, -0.824432,  0.334729, -0.194771,
   0.34151 ],
 [ 0.697151, -0.155943, -0.126108,  0.630354,  1.177467,  0.652145,  1.164735,  0.113875,
  -1.30197 , -0.217511, -0.383603, -0.25087 ,  0.675338,  0.63014 , -0.605845,  0.874237,
  -1.566947, -0.163496, -0.216465, -0.246632,  0.783598,  0.174098,  0.862843, -0.336605,
   0.273648],
 [-0.372895,  0.523043,  0.103949,  0.35772 ,  0.449173, -0.805408, -0.753901,  1.184156,
   0.84082 ,  0.437043, -0.853956, -0.618056, -0.476224,  0.35053 ,  0.193234, -0.117282,
   0.283252, -0.468044, -0.268567, -0.253453, -0.792907, -0.130953, -0.060929,  0.09406 ,
   0.711486],
 [ 0.894402,  0.041993, -0.450169, -0.616345, -0.716002, -0.118944, -0.676855, -1.327675,
   0.773883,  0.479376,  0.515601, -0.02116 , -0.45907 , -0.164119, -0.502328, -0.464797,
   0.545977, -0.06279 , -0.077162, -0.469853,  0.077063, -0.089981, -0.199634,  0.805488,
  -0.540171]], np.float32),
    "intercept": np.array([-1.22085 ,  1.818735,  0.595787, -1.898759,  0.705086], np.float32),
}
