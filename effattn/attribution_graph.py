"""An encoder as functions of its cut points, the pieces `effattn.attribution` differentiates.

The model runs from word-piece embeddings fed as `inputs_embeds` (position and type embeddings
are added by the model). Hooks name four kinds of cut point per layer m:

    embeds ─▶ ("input", m) ─attention module─▶ ("attention", m) ─rest of the layer─▶ ("output", m)
                         └─ ("heads", m): z = A·V per head, (batch, head, query, d_head), before W_O

`run` computes any cut point from given values at earlier ones (substituted for what the
forward would have computed there: the same numbers, but now the inputs of a function), and
stops the forward right there with a private exception, so nothing above it is computed. Each
piece, e.g. ("input", m), ("attention", m) ↦ ("output", m), thus becomes a function that
`torch.func.vjp` can differentiate on its own (the layers below a substitute still run, one
cheap forward that nothing differentiates).
"""

import inspect
from contextlib import contextmanager
from typing import Iterator

import torch

from .errors import InputShapeError, UnsupportedModelError
from .routing import check_supported, recorded_outputs, routed_attention

Cut = tuple[str, int]  # (kind, layer): kind in "input", "attention", "heads", "output"


class _StopForward(Exception):
    """Raised by our own hook at the cut point asked for; carries its value."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


@contextmanager
def eval_no_dropout(model) -> Iterator[None]:
    """Eval mode for the call, the caller's training flag restored. Outer autograd is off:
    torch.func tracks the inputs it differentiates, parameters need no graph."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class Encoder:
    """`model` with the batch's other inputs bound, as functions of its cut points."""

    def __init__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        self.model, (self.embeds, self.kwargs) = model, _embeddings_and_kwargs(model, batch)
        self.key_mask = _key_mask(batch, self.embeds)  # (batch, key) bool, True = real token
        self.layers = _recorded_modules(model, "hidden_states")
        self.attentions = _recorded_modules(model, "attentions")

    def values(self, stop: Cut) -> dict[Cut, torch.Tensor]:
        """Every input, attention and output cut point below `stop`, from one forward."""
        taken = {}
        self.run(self.embeds, {}, stop, taken=taken)
        return taken

    def run(self, embeds, substitutes: dict[Cut, torch.Tensor], stop: Cut, *,
            taken: dict | None = None) -> torch.Tensor:
        """The value at `stop` when the forward uses `substitutes` at their cut points (and
        records every cut point it passes in `taken`)."""
        cuts = _Cuts(substitutes, stop, taken)
        hooks = ([m.register_forward_pre_hook(cuts.enter_layer) for m in self.layers]
                 + [m.register_forward_hook(cuts.leave_attention) for m in self.attentions]
                 + [m.register_forward_hook(cuts.leave_layer) for m in self.layers])
        try:
            with routed_attention(self.model, cuts.heads):
                self.model(**self.kwargs, inputs_embeds=embeds)
        except _StopForward as stopped:
            return stopped.value
        finally:
            for hook in hooks:
                hook.remove()
        raise UnsupportedModelError(
            f"{type(self.model).__name__} ran without reaching {stop} through its layer modules "
            "and transformers' AttentionInterface, so its layers were not seen: use a "
            "BERT-family encoder such as BERT, RoBERTa, DistilBERT, ELECTRA or MiniLM")


class _Cuts:
    """The hooks of one run: substitute, record and stop at the cut points."""

    def __init__(self, substitutes: dict[Cut, torch.Tensor], stop: Cut, taken: dict | None):
        self.substitutes, self.stop, self.taken, self.layer = substitutes, stop, taken, -1

    def at(self, kind: str, value: torch.Tensor) -> torch.Tensor:
        cut = (kind, self.layer)
        value = self.substitutes.get(cut, value)
        if self.taken is not None:
            self.taken[cut] = value
        if cut == self.stop:
            raise _StopForward(value)
        return value

    def heads(self, attn, values, key_mask, spare):  # the routing handler: z only when asked
        if self.stop == ("heads", self.layer):
            raise _StopForward(attn @ values)  # (batch, head, query, d_head)
        return attn

    def enter_layer(self, module, args):
        self.layer += 1
        return (self.at("input", args[0]), *args[1:])

    def leave_attention(self, module, args, output):
        if isinstance(output, (tuple, list)):
            return (self.at("attention", output[0]), *output[1:])
        return self.at("attention", output)

    def leave_layer(self, module, args, output):
        self.at("output", output[0] if isinstance(output, (tuple, list)) else output)


def _recorded_modules(model, kind: str) -> list[torch.nn.Module]:
    """The modules whose outputs transformers itself records as `kind`, in run order."""
    spec = recorded_outputs(model).get(kind)  # MPNet declares none: effattn's stand-in
    target = getattr(spec, "target_class", spec)
    modules = [m for m in model.modules() if isinstance(target, type) and isinstance(m, target)]
    if not modules:
        raise UnsupportedModelError(
            f"{type(model).__name__} does not declare its {kind} module class in transformers' "
            f"_can_record_outputs, so its layers cannot be found: use a transformers (≥ 5) "
            "encoder such as BERT, RoBERTa, DistilBERT, ELECTRA or MiniLM")
    return modules


def _embeddings_and_kwargs(model, batch) -> tuple[torch.Tensor, dict]:
    """The word-piece embeddings (batch, key, d_embed) and the model's other keyword arguments."""
    if "input_ids" not in batch:
        raise InputShapeError(
            f"attribution needs the batch's input_ids to look up the word-piece embeddings, got "
            f"keys {sorted(batch)}: pass the tokenizer's output, e.g. tokenizer(text, return_tensors='pt')")
    check_supported(model)
    if "inputs_embeds" not in inspect.signature(model.forward).parameters:
        raise UnsupportedModelError(
            f"{type(model).__name__}.forward takes no inputs_embeds, so gradients with respect to "
            "the word-piece embeddings cannot be taken: use a transformers encoder such as BERT, "
            "RoBERTa, DistilBERT, ELECTRA or MiniLM")
    input_ids = batch["input_ids"]
    kwargs = {key: value for key, value in batch.items() if key != "input_ids"}
    positions = _position_ids_from_input_ids(model, input_ids)
    if positions is not None and "position_ids" not in kwargs:
        kwargs["position_ids"] = positions
    return model.get_input_embeddings()(input_ids).detach(), kwargs


def _position_ids_from_input_ids(model, input_ids) -> torch.Tensor | None:
    """RoBERTa-style embeddings number positions from input_ids, skipping pads; from
    inputs_embeds they would count the pads too, which shifts every left-padded input."""
    for module in model.modules():
        make = getattr(module, "create_position_ids_from_input_ids", None)
        if make is not None and isinstance(getattr(module, "padding_idx", None), int):
            return make(input_ids, module.padding_idx)
    return None


def _key_mask(batch, embeds) -> torch.Tensor:
    mask = batch.get("attention_mask")
    if mask is None:
        return torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
    return mask.to(device=embeds.device, dtype=torch.bool)
