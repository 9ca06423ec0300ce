"""precompute.evaluate: metrics per task and predictions with standard vs effective attention."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from precompute.evaluate import predict_logits, predictions_from_logits, task_metrics
from precompute.finetune import load_classifier
from precompute.glue import load_task


@pytest.fixture(scope="module")
def rte_setup(glue_dir, tiny_bert_dir):
    """(RTE eval frame, tiny classifier, its tokenizer), loaded once for the module."""
    frame = load_task("rte", glue_dir=glue_dir).eval
    return frame, load_classifier(tiny_bert_dir, "rte"), AutoTokenizer.from_pretrained(tiny_bert_dir)


def predict(model, tokenizer, frame, *, effective: bool, batch_size: int, max_seq_len: int, device) -> np.ndarray:
    """Predicted class id or score (f64) per row of ``frame``, optionally with A_eff substituted."""
    logits = predict_logits(model, tokenizer, frame, effective=effective, batch_size=batch_size,
                            max_seq_len=max_seq_len, device=device)
    return predictions_from_logits(logits)


def test_mrpc_reports_f1_and_accuracy():
    metrics = task_metrics("mrpc", np.array([1.0, 0.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0, 0.0]))
    assert metrics == pytest.approx({"accuracy": 0.5, "f1": 2 / 3})


def test_stsb_reports_pearson_and_spearman():
    labels = np.array([0.0, 1.0, 2.0, 5.0])
    metrics = task_metrics("stsb", labels, labels ** 2)
    assert metrics["spearman"] == pytest.approx(1.0) and metrics["pearson"] < 1.0


def test_predictions_are_argmax_or_score():
    assert predictions_from_logits(np.array([[0.1, 0.9], [2.0, -1.0]])).tolist() == [1.0, 0.0]
    assert predictions_from_logits(np.array([[3.5], [0.25]])).tolist() == [3.5, 0.25]


def test_effective_attention_leaves_logits_unchanged(rte_setup):
    frame, model, tokenizer = rte_setup
    options = dict(batch_size=5, max_seq_len=64, device="cpu")
    standard = predict_logits(model, tokenizer, frame, effective=False, **options)
    effective = predict_logits(model, tokenizer, frame, effective=True, **options)
    assert standard.shape == (len(frame), 2)
    np.testing.assert_allclose(effective, standard, atol=1e-4)
    assert predict(model, tokenizer, frame, effective=True, **options).tolist() == predictions_from_logits(standard).tolist()


def test_prediction_order_follows_the_frame_not_the_length_sort(rte_setup):
    frame, model, tokenizer = rte_setup
    together = predict_logits(model, tokenizer, frame, effective=False, batch_size=7, max_seq_len=64, device="cpu")
    one_by_one = np.concatenate([predict_logits(model, tokenizer, frame[i:i + 1], effective=False, batch_size=1,
                                                max_seq_len=64, device="cpu") for i in range(3)])
    np.testing.assert_allclose(together[:3], one_by_one, atol=1e-5)
