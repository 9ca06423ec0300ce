"""effattn: exact, fast effective attention for Hugging Face encoders.

    decompose_attention(attn, values, attention_mask) -> AttentionDecomposition
    effective_attention(attn, values, attention_mask, out=None) -> attn_eff
    original_code_effective_attention(...)   the research code's padded method, comparison only
    capture_attention(model, batch, on_layer=None) -> CaptureResult
    effective_attention_substituted(model)   context manager: forward passes use A_eff
    classify_patterns(maps, segment_ids=...) -> (labels, scores)   Kovaleva et al.'s five classes
"""

from .capture import CaptureResult, LayerCapture, capture_attention
from .effective import AttentionDecomposition, decompose_attention, effective_attention
from .errors import (EffattnError, InputShapeError, NonFiniteValuesError, NotAProbabilityError,
                     UnsupportedModelError)
from .original_code import original_code_effective_attention
from .patterns import (FEATURES, PATTERNS, classify_pattern, classify_patterns, normalise_rows,
                       pattern_features, pattern_scores)
from .substitution import effective_attention_substituted

__all__ = [
    "FEATURES",
    "PATTERNS",
    "AttentionDecomposition",
    "CaptureResult",
    "EffattnError",
    "InputShapeError",
    "LayerCapture",
    "NonFiniteValuesError",
    "NotAProbabilityError",
    "UnsupportedModelError",
    "capture_attention",
    "classify_pattern",
    "classify_patterns",
    "decompose_attention",
    "effective_attention",
    "effective_attention_substituted",
    "normalise_rows",
    "original_code_effective_attention",
    "pattern_features",
    "pattern_scores",
]
