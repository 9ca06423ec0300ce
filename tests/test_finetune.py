"""precompute.finetune on the fixture RTE data and the tiny random BERT: resume and no-op rerun."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from transformers.modeling_outputs import SequenceClassifierOutput

from effattn.errors import UnsupportedModelError
from precompute.config import RunConfig
from precompute.finetune import check_returns_attention, epoch_order, run_finetune, total_steps
from precompute.glue import load_task
from precompute.store import RunFolder


def _config(out, **options) -> RunConfig:
    # 32 fixture rows / batch 8 = 4 steps per epoch, 2 epochs = 8 steps; state saved every 3 steps
    return RunConfig(tasks=("rte",), out=out, epochs=2, batch_size=8, max_seq_len=32, device="cpu",
                     threads=1, save_every_steps=3, **options)


@pytest.fixture(scope="module")
def train(glue_dir):
    return load_task("rte", glue_dir=glue_dir).train


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, train, tiny_bert_dir) -> RunFolder:
    out = tmp_path_factory.mktemp("uninterrupted")
    run = RunFolder(out)
    assert run_finetune(run, "rte", train, tiny_bert_dir, _config(out))
    return run


def _weights(run: RunFolder, task: str = "rte") -> dict[str, torch.Tensor]:
    return load_file(run.checkpoint_dir(task) / "model.safetensors")


def test_finished_finetune_saves_checkpoint_and_marks_stage(uninterrupted):
    assert uninterrupted.stage_done("finetune", "rte")
    assert (uninterrupted.checkpoint_dir("rte") / "tokenizer.json").exists()
    assert not uninterrupted.training_state_dir("rte").exists()
    assert uninterrupted.read_manifest()["finetune"]["rte"]["steps"] == 8


def test_resumed_run_equals_uninterrupted_run(tmp_path, train, tiny_bert_dir, uninterrupted):
    run = RunFolder(tmp_path)
    assert not run_finetune(run, "rte", train, tiny_bert_dir, _config(tmp_path, stop_after_steps=5))
    assert (run.training_state_dir("rte") / "state.pt").exists() and not run.stage_done("finetune", "rte")
    assert run_finetune(run, "rte", train, tiny_bert_dir, _config(tmp_path))
    assert run.read_manifest()["finetune"]["rte"]["resumed_at_step"] == 4  # last saved state (epoch end)
    resumed, reference = _weights(run), _weights(uninterrupted)
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)


def test_rerun_of_a_finished_stage_is_a_no_op(uninterrupted, train, tiny_bert_dir):
    before = (uninterrupted.checkpoint_dir("rte") / "model.safetensors").stat().st_mtime_ns
    assert run_finetune(uninterrupted, "rte", train, tiny_bert_dir, _config(uninterrupted.root))
    assert (uninterrupted.checkpoint_dir("rte") / "model.safetensors").stat().st_mtime_ns == before


def test_regression_task_gets_one_output(tmp_path, glue_dir, tiny_bert_dir):
    train = load_task("stsb", glue_dir=glue_dir, max_train_examples=8).train
    run = RunFolder(tmp_path)
    assert run_finetune(run, "stsb", train, tiny_bert_dir, dataclasses.replace(_config(tmp_path), epochs=1))
    assert _weights(run, "stsb")["classifier.weight"].shape[0] == 1


def test_fractional_epochs_train_part_of_the_last_epoch():
    assert total_steps(32, RunConfig(tasks=("rte",), out="x", epochs=1.5, batch_size=8)) == (4, 6)


def test_epoch_order_is_a_seeded_permutation():
    assert sorted(epoch_order(10, 0, 42)) == list(range(10))
    assert epoch_order(10, 0, 42) == epoch_order(10, 0, 42) != epoch_order(10, 1, 42)


class _NoAttentionModel(torch.nn.Module):
    """A classifier whose output carries no attention weights."""

    config = type("Config", (), {"pad_token_id": 0})()

    def forward(self, input_ids, output_attentions=False):
        return SequenceClassifierOutput(logits=torch.zeros(len(input_ids), 2))


def test_model_without_attention_weights_is_unsupported():
    with pytest.raises(UnsupportedModelError, match="does not return attention weights"):
        check_returns_attention(_NoAttentionModel(), "no-attention")
