"""Scores → the top-k classes with confidences (softmax, sigmoid, or as the model gave)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

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


#: How a model's scores become confidences: ``softmax`` (one class per image),
#: ``sigmoid`` (independent classes), ``none`` (the model outputs probabilities).
Activation = Literal["softmax", "sigmoid", "none"]


def sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """The logistic function of each score, without overflow."""
    values = logits.astype(np.float64)
    result: npt.NDArray[np.float64] = np.exp(-np.logaddexp(0.0, -values))
    return result


def activate(logits: npt.NDArray[np.float32], activation: Activation) -> npt.NDArray[np.float64]:
    """A model's scores as confidences: softmax, sigmoid, or as given."""
    if activation == "softmax":
        return softmax(logits)
    if activation == "sigmoid":
        return sigmoid(logits)
    return logits.astype(np.float64)


def top_k(
    logits: npt.NDArray[np.float32],
    labels: Sequence[str],
    k: int,
    activation: Activation = "softmax",
) -> list[Prediction]:
    """The ``k`` most confident classes of one score vector, most confident first."""
    return rank(activate(logits, activation), labels, k)


def rank(probs: npt.NDArray[np.float64], labels: Sequence[str], k: int) -> list[Prediction]:
    """The ``k`` classes with the highest confidences, highest first."""
    k = min(k, probs.shape[-1])
    best = np.argpartition(-probs, k - 1)[:k]
    best = best[np.argsort(-probs[best], kind="stable")]
    return [Prediction(int(i), labels[int(i)], float(probs[int(i)])) for i in best]
