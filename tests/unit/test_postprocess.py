"""Softmax and top-k ranking."""

from __future__ import annotations

import numpy as np
import pytest

from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.postprocess import softmax, top_k


def test_softmax_is_stable_for_huge_logits() -> None:
    probs = softmax(np.array([1000.0, 1000.0, -1000.0], dtype=np.float32))
    assert np.allclose(probs, [0.5, 0.5, 0.0])


def test_top_k_is_sorted_and_labelled() -> None:
    logits = np.zeros(1000, dtype=np.float32)
    logits[[967, 281, 5]] = [9.0, 7.0, 8.0]
    ranked = top_k(logits, imagenet_labels(), 3)
    assert [p.class_id for p in ranked] == [967, 5, 281]
    assert ranked[0].label == "espresso"
    assert ranked[0].confidence > ranked[1].confidence > ranked[2].confidence


def test_labels_are_unique_and_complete() -> None:
    labels = imagenet_labels()
    assert len(labels) == len(set(labels)) == 1000
    assert labels[281] == "tabby" and labels[517] == "crane (517)"


def test_sigmoid_and_none_activations() -> None:
    scores = np.array([0.0, 2.0, -1.0], dtype=np.float32)
    sig = top_k(scores, ["a", "b", "c"], 3, "sigmoid")
    assert [p.label for p in sig] == ["b", "a", "c"]
    assert sig[0].confidence == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert sig[1].confidence == pytest.approx(0.5)
    probs = np.array([0.1, 0.7, 0.2], dtype=np.float32)
    given = top_k(probs, ["a", "b", "c"], 2, "none")
    assert [(p.label, round(p.confidence, 6)) for p in given] == [("b", 0.7), ("c", 0.2)]
