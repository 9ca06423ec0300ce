"""Importance of the inputs for a classifier's output (Meister et al. 2021, Eq. 4–6; METHODS.md §3.4).

For each example, ŷ is the model's output: the probability of the class it predicts (a
regression model: its score). Three importance rows over the key positions, each normalised to
sum to 1 over the positions it is defined on (0 elsewhere and at padding):

    input_gradient          ‖∂ŷ/∂e_j‖₂, e_j the word-piece embedding fed as inputs_embeds (Eq. 4)
    intermediate_gradient   ‖∂ŷ/∂h_j^(l)‖₂ per layer l, h^(l) the vectors layer l's attention
                            mixes (the embedding output for l = 0): the importance of the
                            intermediate states that a layer-l head attends over (Eq. 5's h_p)
    leave_one_out           |ŷ − ŷ₋ⱼ|, ŷ₋ⱼ the same class's probability with word piece j deleted
                            from the input (Eq. 6), over the `removable` positions only

Deleting, not masking: BERT has no "absent token", so token j is cut out of input_ids (and of
token_type_ids), the sequence is one shorter and the positions after j move up by one; special
tokens ([CLS], [SEP]) are never removable, so the input keeps its shape.
"""

from dataclasses import dataclass

import torch

from .attribution_graph import eval_no_dropout
from .errors import InputShapeError
from .routing import check_supported

__all__ = ["OutputImportance", "output_importance"]


@dataclass(frozen=True)
class OutputImportance:
    target: torch.Tensor                 # (batch,) ŷ
    predicted: torch.Tensor              # (batch,) int64 class whose probability ŷ is (0 for regression)
    input_gradient: torch.Tensor         # (batch, key)
    intermediate_gradient: torch.Tensor  # (batch, layer, key)
    leave_one_out: torch.Tensor          # (batch, key), 0 outside `removable`
    removable: torch.Tensor              # (batch, key) bool, the positions leave_one_out covers


def _normalised(scores: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """scores (..., key) ≥ 0 kept where `where` (broadcast), divided by their sum there."""
    kept = torch.where(where, scores, 0)
    return kept / kept.sum(-1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)


def _target(logits: torch.Tensor, predicted: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ŷ, predicted class): the predicted class's probability, or the regression score."""
    if logits.shape[-1] == 1:
        return logits[:, 0], torch.zeros(len(logits), dtype=torch.long, device=logits.device)
    probabilities = logits.softmax(-1)
    if predicted is None:
        predicted = probabilities.argmax(-1)
    return probabilities.gather(-1, predicted[:, None])[:, 0], predicted


def output_importance(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                      removable: torch.Tensor) -> OutputImportance:
    """The three importance rows of every example of `batch` (input_ids, attention_mask, maybe
    token_type_ids) for a sequence classifier, in eval mode (training flag restored).

    removable: (batch, key) bool, the positions leave-one-out may delete (the tokenizer's
    special_tokens_mask inverted, within the attention mask)."""
    check_supported(model)
    if "input_ids" not in batch or "attention_mask" not in batch:
        raise InputShapeError("output_importance needs input_ids and attention_mask: pass the tokenizer's output")
    mask = batch["attention_mask"].bool()
    if removable.shape != mask.shape:
        raise InputShapeError(f"removable has shape {tuple(removable.shape)}, the batch {tuple(mask.shape)}: "
                              "pass one flag per token (e.g. ~special_tokens_mask)")
    removable = removable.bool() & mask
    with eval_no_dropout(model), torch.enable_grad():
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
        others = {name: value for name, value in batch.items() if name != "input_ids"}
        output = model(inputs_embeds=embeds, **others, output_hidden_states=True)
        target, predicted = _target(output.logits)
        states = output.hidden_states[:-1]  # the inputs of the layers
        gradients = torch.autograd.grad(target.sum(), [embeds, *states])  # examples are independent
    input_gradient = _normalised(gradients[0].norm(dim=-1), mask)
    intermediate = _normalised(torch.stack([g.norm(dim=-1) for g in gradients[1:]], 1), mask[:, None])
    with eval_no_dropout(model):
        leave_one_out = torch.stack([_leave_one_out(model, batch, row, removable[row], predicted[row : row + 1],
                                                    target[row]) for row in range(len(mask))])
    return OutputImportance(target.detach(), predicted, input_gradient, intermediate, leave_one_out, removable)


def _leave_one_out(model, batch: dict[str, torch.Tensor], row: int, removable: torch.Tensor,
                   predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(key,) normalised |ŷ − ŷ₋ⱼ| of one example, its deletions run as one batch."""
    n = int(batch["attention_mask"][row].sum())
    if not batch["attention_mask"][row, :n].all():
        raise InputShapeError("leave-one-out needs right-padded inputs (real tokens first): tokenize with padding_side='right'")
    positions = removable.nonzero()[:, 0]
    scores = torch.zeros_like(removable, dtype=target.dtype)
    if len(positions) == 0:
        return scores
    keep = ~torch.eye(n, dtype=torch.bool, device=positions.device)[positions]  # (deletion, position)
    deleted = {name: value[row, :n].expand(len(positions), n)[keep].reshape(len(positions), n - 1)
               for name, value in batch.items() if name != "attention_mask"}
    deleted["attention_mask"] = torch.ones(len(positions), n - 1, dtype=batch["attention_mask"].dtype,
                                           device=positions.device)
    logits = model(**deleted).logits
    without, _ = _target(logits, predicted.expand(len(positions)))
    scores[positions] = (target - without).abs()
    return _normalised(scores, removable)
