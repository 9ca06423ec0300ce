"""The exceptions effattn raises, in one place.

Every message is one sentence: what was expected, what arrived, how to fix it.
"""

__all__ = [
    "EffattnError",
    "InputShapeError",
    "NonFiniteValuesError",
    "NotAProbabilityError",
    "UnsupportedModelError",
]


class EffattnError(Exception):
    """Base class: catch this to handle every effattn error."""


class InputShapeError(EffattnError, ValueError):
    """Tensors whose shapes do not fit together (attn, values, attention_mask), an empty batch
    given to a model, or an attention_mask holding values other than 0 and 1."""


class NonFiniteValuesError(EffattnError, ValueError):
    """Value vectors holding nan or inf, which have no column space to project onto."""


class NotAProbabilityError(EffattnError, ValueError):
    """Attention rows that do not sum to 1, so they are not attention probabilities."""


class UnsupportedModelError(EffattnError, TypeError):
    """A model whose attention weights cannot be captured through transformers' interface."""
