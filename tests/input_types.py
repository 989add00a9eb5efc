"""The built-in model made to take float16 images, or uint8 pixels it normalises itself.

Graph surgery on the exported built-in model: a new input and a few nodes in front of
the old one. The uint8 graph takes NHWC pixels as they are, as models converted from
TensorFlow/TFLite and many edge models do, and does the built-in preprocessing's
``(p - 127) / 128`` itself; the float16 graph casts its input up to float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: A model.yaml for the uint8 graph: resize and crop only (the graph normalises).
UINT8_YAML = """\
input: {name: pixels, layout: NHWC}
preprocess:
  resize: {shortest: 256}
  crop: {center: 224}
output: {name: logits, activation: softmax}
"""
#: A model.yaml for the float16 graph: the built-in model's preprocessing.
FLOAT16_YAML = """\
input: {name: image, layout: NCHW}
preprocess:
  resize: {shortest: 256}
  crop: {center: 224}
  scale: 1
  mean: [127, 127, 127]
  std: [128, 128, 128]
output: {name: logits, activation: softmax}
"""


def with_input_type(source: Path, target: Path, kind: str) -> Path:
    """Write ``source`` (a float32 NCHW image classifier) to ``target`` taking
    ``kind``: ``float16`` NCHW images, or ``uint8`` NHWC pixels."""
    model = onnx.load(str(source))
    graph = model.graph
    old = graph.input[0]
    nodes: list[onnx.NodeProto]
    if kind == "float16":
        new = helper.make_tensor_value_info("image", TensorProto.FLOAT16, ["n", 3, 224, 224])
        nodes = [helper.make_node("Cast", ["image"], [old.name], to=TensorProto.FLOAT)]
    elif kind == "uint8":
        new = helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["n", 224, 224, 3])
        shape = (1, 3, 1, 1)
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.full(shape, 127, np.float32), "pixel_mean"),
                numpy_helper.from_array(np.full(shape, 128, np.float32), "pixel_std"),
            ]
        )
        nodes = [
            helper.make_node("Cast", ["pixels"], ["pixels_f"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["pixels_f"], ["pixels_nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Sub", ["pixels_nchw", "pixel_mean"], ["pixels_centred"]),
            helper.make_node("Div", ["pixels_centred", "pixel_std"], [old.name]),
        ]
    else:
        raise ValueError(kind)
    graph.input.remove(old)
    graph.input.insert(0, new)
    for node in reversed(nodes):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target
