"""Softmax and top-k ranking."""

from __future__ import annotations

import numpy as np

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
