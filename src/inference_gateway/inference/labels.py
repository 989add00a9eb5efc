"""Class labels of the models the gateway ships."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 class names, indexed by class id.

    The data file holds ``synset<TAB>lemma, lemma, ...`` per line in class-id order;
    the label is the first lemma (``"tabby"`` for ``n02123045``). Two synsets share a
    first lemma ("crane" the bird and the machine, "maillot" twice); the later one gets
    its class id appended, so every label names exactly one class.
    """
    text = (
        files("inference_gateway.inference")
        .joinpath("data/imagenet_labels.txt")
        .read_text(encoding="utf-8")
    )
    labels: list[str] = []
    for class_id, line in enumerate(text.splitlines()):
        name = line.split("\t", 1)[1].split(",", 1)[0].strip()
        labels.append(f"{name} ({class_id})" if name in labels else name)
    if len(labels) != 1000:  # pragma: no cover - guards a damaged package
        raise RuntimeError(f"expected 1000 ImageNet labels, found {len(labels)}")
    return tuple(labels)
