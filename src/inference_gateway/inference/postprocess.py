"""Logits → the top-k classes with softmax confidences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Prediction:
    """One class of a model's answer."""

    class_id: int
    label: str
    confidence: float


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Numerically stable softmax over the last axis."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def top_k(logits: npt.NDArray[np.float32], labels: Sequence[str], k: int) -> list[Prediction]:
    """The ``k`` most probable classes of one logit vector, most probable first."""
    probs = softmax(logits)
    k = min(k, probs.shape[-1])
    best = np.argpartition(-probs, k - 1)[:k]
    best = best[np.argsort(-probs[best], kind="stable")]
    return [Prediction(int(i), labels[int(i)], float(probs[int(i)])) for i in best]
