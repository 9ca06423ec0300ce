"""effattn: exact, fast effective attention for Hugging Face encoders.

    decompose_attention(attn, values, attention_mask) -> AttentionDecomposition
    effective_attention(attn, values, attention_mask, out=None) -> attn_eff
    original_code_effective_attention(...)   the research code's padded method, comparison only
    capture_attention(model, batch, on_layer=None) -> CaptureResult
    effective_attention_substituted(model)   context manager: forward passes use A_eff
    transformed_value_norms(values, output_weight) -> ‖f(x_j)‖   norm-weighted attention (Kobayashi)
    efficient_attention(attn, values, attention_mask) -> sparse p   project-defined, after Naim & Asher
    attention_kind(layer_capture, kind) -> map   every kind of KIND_FUNCTIONS from one captured layer
    head_attribution(model, batch) -> g          gradient attribution of every head to the inputs
    layer_influence(model, batch) -> LayerInfluence   input influence on each layer (Meister et al.)
    classify_patterns(maps, segment_ids=...) -> (labels, scores)   Kovaleva et al.'s five classes
    set_attention_map(model, "sparsemax")        every head runs sparsemax / sparsegen:<λ> / softmax
    sparsemax(scores), sparsegen_lin(scores, λ)  the sparse maps themselves (Meister et al.)
    output_importance(model, batch) -> OutputImportance   input/intermediate importance of the output
"""

from .attribution import LayerInfluence, head_attribution, layer_influence
from .capture import CaptureResult, LayerCapture, capture_attention
from .effective import AttentionDecomposition, decompose_attention, effective_attention
from .errors import (EffattnError, InputShapeError, NonFiniteValuesError, NotAProbabilityError,
                     UnsupportedModelError)
from .efficient import efficient_attention
from .importance import OutputImportance, output_importance
from .kinds import KIND_FUNCTIONS, attention_kind
from .norm_weighted import (head_output_weights, norm_weighted_attention, output_projections,
                            transformed_value_norms)
from .original_code import original_code_effective_attention
from .patterns import (FEATURES, PATTERNS, classify_pattern, classify_patterns, normalise_rows,
                       pattern_features, pattern_scores)
from .routing import attention_map_of, set_attention_map
from .sparse_attention import parse_attention_map, sparsegen_lin, sparsemax
from .substitution import effective_attention_substituted

__all__ = [
    "FEATURES",
    "KIND_FUNCTIONS",
    "PATTERNS",
    "AttentionDecomposition",
    "CaptureResult",
    "EffattnError",
    "InputShapeError",
    "LayerCapture",
    "LayerInfluence",
    "NonFiniteValuesError",
    "NotAProbabilityError",
    "OutputImportance",
    "UnsupportedModelError",
    "attention_kind",
    "attention_map_of",
    "capture_attention",
    "classify_pattern",
    "classify_patterns",
    "decompose_attention",
    "effective_attention",
    "effective_attention_substituted",
    "efficient_attention",
    "head_attribution",
    "head_output_weights",
    "layer_influence",
    "norm_weighted_attention",
    "normalise_rows",
    "parse_attention_map",
    "set_attention_map",
    "sparsegen_lin",
    "sparsemax",
    "original_code_effective_attention",
    "output_importance",
    "output_projections",
    "pattern_features",
    "pattern_scores",
    "transformed_value_norms",
]
