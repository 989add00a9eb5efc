"""Real test models for the model repository, made by ONNX graph surgery.

Every variant is the built-in EfficientNet-Lite0 graph with a few nodes added, so it
is as accurate as the built-in model and builds in well under a second (no torch
export). A convention variant takes its input another way (layout, colour order,
scale, mean, std, names, a fixed batch) and converts it back inside the graph to
what the built-in network expects: fed by the gateway with the matching
preprocessing, it answers as the built-in model does, and with any other
preprocessing it does not. A shifted variant answers differently on purpose, to
tell two versions of one model apart.

The three conventions the gateway's tests use are `NHWC_IMAGENET`, `BGR_CAFFE` and
`BATCH1_NAMED`; `HF_IMAGENET` is what a Hugging Face Optimum export looks like. Call
these builders from tests and fixtures, not at import time: the built-in graph comes
from the session's ``MODEL_CACHE_DIR``, which tests/conftest.py sets when the session
starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from yaml import safe_dump

from inference_gateway.config import Settings
from inference_gateway.inference.labels import imagenet_labels
from inference_gateway.inference.model import EFFICIENTNET_LITE0, ensure_model_onnx
from inference_gateway.inference.preprocess import PreprocessConfig

Triple = tuple[float, float, float]

#: torchvision's ImageNet normalisation, on 0..1 pixels (scale 1/255), RGB order.
IMAGENET_MEAN: Triple = (0.485, 0.456, 0.406)
IMAGENET_STD: Triple = (0.229, 0.224, 0.225)
#: The original Caffe ResNet convention: BGR, 0..255 pixels, mean only (BGR order).
CAFFE_MEAN_BGR: Triple = (103.939, 116.779, 123.68)
#: What the built-in network expects: (pixel - 127) / 128 per RGB channel, NCHW.
BUILTIN_MEAN: Triple = (127.0, 127.0, 127.0)
BUILTIN_STD: Triple = (128.0, 128.0, 128.0)

#: The name the built-in graph's input gets inside a variant (fed by the added nodes).
_INNER_INPUT = "builtin_input"


@cache
def builtin_onnx_path() -> Path:
    """The built-in model's ONNX file in the session's model cache, exported if missing."""
    cache_dir = Settings(_env_file=None).model_cache_dir  # MODEL_CACHE_DIR, not a .env file
    return ensure_model_onnx(EFFICIENTNET_LITE0, "1", cache_dir)


@cache
def builtin_onnx() -> onnx.ModelProto:
    """The built-in model's ONNX graph with its weights, loaded once per process.

    Shared: do not change it. The builders below copy it before adding nodes.
    """
    return onnx.load(str(builtin_onnx_path()))


@dataclass(frozen=True, slots=True)
class Convention:
    """One way a model can take its images, as data, with what follows from it.

    ``mean`` and ``std`` are in the ``color`` order, on pixels times ``scale``;
    ``batch`` is a fixed batch size, or None for a dynamic one.
    """

    layout: Literal["NCHW", "NHWC"]
    color: Literal["RGB", "BGR"]
    scale: float
    mean: Triple
    std: Triple
    input_name: str = "input"
    output_name: str = "logits"
    batch: int | None = None

    def preprocess_config(self) -> PreprocessConfig:
        """The gateway's preprocessing that feeds this model correctly."""
        return PreprocessConfig(
            scale=self.scale, mean=self.mean, std=self.std, layout=self.layout, color=self.color
        )

    def model_yaml(self) -> dict[str, Any]:
        """The ``model.yaml`` keys that describe this model (every one explicit)."""
        config: dict[str, Any] = {
            "input": {"name": self.input_name, "layout": self.layout, "color": self.color},
            "preprocess": {
                "resize": {"shortest": 256},
                "crop": {"center": 224},
                "interpolation": "bilinear",
                "scale": self.scale,
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "output": {"name": self.output_name, "activation": "softmax"},
        }
        if self.batch is not None:
            config["max_batch_size"] = self.batch
        return config

    def build(self, builtin: onnx.ModelProto | None = None) -> onnx.ModelProto:
        """This convention's variant of ``builtin`` (default: the built-in model)."""
        return convention_variant(
            builtin if builtin is not None else builtin_onnx(),
            layout=self.layout,
            color=self.color,
            scale=self.scale,
            mean=self.mean,
            std=self.std,
            input_name=self.input_name,
            output_name=self.output_name,
            batch=self.batch,
        )


#: (a) Channels last, torchvision's ImageNet normalisation: exercises ``layout: NHWC``,
#: ``scale: 1/255`` and unequal per-channel mean and std (in RGB order).
NHWC_IMAGENET = Convention(
    layout="NHWC", color="RGB", scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD
)
#: (b) The Caffe convention: BGR, 0..255 pixels, a different mean per channel (given
#: in BGR order) and no std. Telling for ``color: BGR``: mean applied in the wrong
#: channel order, or channels not swapped, changes the logits.
BGR_CAFFE = Convention(
    layout="NCHW", color="BGR", scale=1.0, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0)
)
#: (c) A graph fixed to batches of one (``max_batch_size: 1``), with its own input and
#: output names (``input.name``, ``output.name``), normalised as torchvision does.
BATCH1_NAMED = Convention(
    layout="NCHW",
    color="RGB",
    scale=1 / 255,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_name="image",
    output_name="scores",
    batch=1,
)
#: A Hugging Face Optimum export of an image classifier: NCHW RGB ``pixel_values`` in,
#: ``logits`` out, ImageNet normalisation (what `write_hf_model` describes).
HF_IMAGENET = Convention(
    layout="NCHW",
    color="RGB",
    scale=1 / 255,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_name="pixel_values",
)
CONVENTIONS: dict[str, Convention] = {
    "nhwc-imagenet": NHWC_IMAGENET,
    "bgr-caffe": BGR_CAFFE,
    "batch1-named": BATCH1_NAMED,
    "hf-imagenet": HF_IMAGENET,
}


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` wherever the top-level graph's nodes and outputs use it."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _tensor_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _only(values: Sequence[onnx.ValueInfoProto], what: str) -> onnx.ValueInfoProto:
    if len(values) != 1:
        raise ValueError(f"expected one graph {what}, found {len(values)}")
    return values[0]


def _const(name: str, array: np.ndarray[Any, Any]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], name=f"{name}_node", value=numpy_helper.from_array(array, name)
    )


def convention_variant(
    builtin: onnx.ModelProto,
    *,
    layout: Literal["NCHW", "NHWC"] = "NCHW",
    color: Literal["RGB", "BGR"] = "RGB",
    scale: float,
    mean: Triple,
    std: Triple,
    input_name: str = "input",
    output_name: str = "logits",
    batch: int | None = None,
) -> onnx.ModelProto:
    """``builtin`` taking its input in another convention, converted back in the graph.

    The new input holds ``x = (pixel * scale - mean) / std`` per channel, channels in
    ``color`` order, laid out ``layout``. One Mul and one Add turn it into the built-in
    ``(pixel - 127) / 128``, a Transpose makes NHWC channels-first, and a Gather puts
    BGR channels in RGB order; the result feeds the original graph. ``batch`` fixes
    the batch dimension (input and output); None keeps it dynamic. Opset and weights
    are those of ``builtin``, which is left unchanged.
    """
    model = _copy(builtin)
    graph = model.graph
    original = _only(graph.input, "input")
    output = _only(graph.output, "output")
    dims = original.type.tensor_type.shape.dim
    channels, height, width = (dim.dim_value for dim in dims[1:])
    if channels != 3:
        raise ValueError(f"expected an NCHW RGB input, found shape {dims}")

    # pixel = (x * std + mean) / scale, so (pixel - 127) / 128 = x * factor + offset.
    std_array, mean_array = np.asarray(std, np.float64), np.asarray(mean, np.float64)
    factor = std_array / (scale * BUILTIN_STD[0])
    offset = (mean_array / scale - BUILTIN_MEAN[0]) / BUILTIN_STD[0]
    shape = (3,) if layout == "NHWC" else (3, 1, 1)
    nodes = [
        _const("convention_factor", factor.astype(np.float32).reshape(shape)),
        _const("convention_offset", offset.astype(np.float32).reshape(shape)),
        helper.make_node(
            "Mul", [input_name, "convention_factor"], ["convention_scaled"], name="convention_mul"
        ),
        helper.make_node(
            "Add",
            ["convention_scaled", "convention_offset"],
            ["convention_normalised"],
            name="convention_add",
        ),
    ]
    current = "convention_normalised"
    if layout == "NHWC":
        nodes.append(
            helper.make_node(
                "Transpose",
                [current],
                ["convention_nchw"],
                name="convention_nhwc_to_nchw",
                perm=[0, 3, 1, 2],
            )
        )
        current = "convention_nchw"
    if color == "BGR":
        nodes.append(_const("convention_bgr_to_rgb", np.array([2, 1, 0], dtype=np.int64)))
        nodes.append(
            helper.make_node(
                "Gather",
                [current, "convention_bgr_to_rgb"],
                ["convention_rgb"],
                name="convention_gather_rgb",
                axis=1,
            )
        )
        current = "convention_rgb"
    nodes.append(helper.make_node("Identity", [current], [_INNER_INPUT], name="convention_out"))

    _rename_tensor(graph, original.name, _INNER_INPUT)
    taken = _tensor_names(graph)
    new_names = [input_name] if output_name == output.name else [input_name, output_name]
    for name in new_names:
        if name in taken or new_names.count(name) > 1:
            raise ValueError(f"{name!r} already names a tensor of the graph")
    batch_dim: int | str = "batch" if batch is None else batch
    spatial = [channels, height, width] if layout == "NCHW" else [height, width, channels]
    new_input = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch_dim, *spatial])
    del graph.input[:]
    graph.input.append(new_input)
    network = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *network])  # topological order: the conversion first
    if output_name != output.name:
        _rename_tensor(graph, output.name, output_name)
    if batch is not None:
        out_dims = _only(graph.output, "output").type.tensor_type.shape.dim
        out_dims[0].Clear()
        out_dims[0].dim_value = batch
    model.doc_string = (
        f"{builtin.doc_string or 'built-in model'}; input {input_name} {layout} {color} "
        f"(pixel * {scale:g} - {list(mean)}) / {list(std)}"
    )
    onnx.checker.check_model(model)
    return model


def shifted_variant(model: onnx.ModelProto, bias_class: int, bias: float) -> onnx.ModelProto:
    """``model`` with ``bias`` added to class ``bias_class``'s logit.

    With a large bias (say 100) it answers ``bias_class`` with a confidence of about 1
    on every image: a "version 2" that no one can mistake for version 1.
    """
    shifted = _copy(model)
    graph = shifted.graph
    output = _only(graph.output, "output")
    classes = output.type.tensor_type.shape.dim[-1].dim_value
    if not 0 <= bias_class < classes:
        raise ValueError(f"class {bias_class} is not among the model's {classes}")
    vector = np.zeros(classes, dtype=np.float32)
    vector[bias_class] = bias
    unshifted = f"{output.name}_unshifted"
    for node in graph.node:
        node.output[:] = [unshifted if name == output.name else name for name in node.output]
        node.input[:] = [unshifted if name == output.name else name for name in node.input]
    graph.node.extend(
        [
            _const("class_bias", vector),
            helper.make_node("Add", [unshifted, "class_bias"], [output.name], name="bias"),
        ]
    )
    shifted.doc_string = f"{model.doc_string}; class {bias_class} logit + {bias:g}"
    onnx.checker.check_model(shifted)
    return shifted


def write_model(directory: Path, model: onnx.ModelProto) -> Path:
    """Save ``model`` as ``directory/model.onnx``, one file with its weights embedded."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save(model, str(path))
    return path


def write_yaml_model(
    root: Path,
    name: str,
    versions: Mapping[int, onnx.ModelProto],
    yaml: Mapping[str, Any] | None,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write ``root/name`` with ``model.yaml``, ``labels.txt`` and one dir per version.

    ``yaml`` is written as given (None: no ``model.yaml``). ``labels`` defaults to the
    ImageNet classes; an empty sequence writes no ``labels.txt``.
    """
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    if yaml is not None:
        (directory / "model.yaml").write_text(safe_dump(dict(yaml), sort_keys=False))
    labels = imagenet_labels() if labels is None else labels
    if labels:
        (directory / "labels.txt").write_text("".join(f"{label}\n" for label in labels))
    for version, model in versions.items():
        write_model(directory / str(version), model)
    return directory


#: A Hugging Face image processor config for `HF_IMAGENET` (resample 2 is bilinear).
HF_PREPROCESSOR_CONFIG: dict[str, Any] = {
    "do_resize": True,
    "size": {"shortest_edge": 256},
    "resample": 2,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 0.00392156862745098,
    "do_normalize": True,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
    "image_processor_type": "EfficientNetImageProcessor",
}


def hf_config(labels: Sequence[str]) -> dict[str, Any]:
    """A Hugging Face model ``config.json`` naming ``labels`` as the classes."""
    return {
        "architectures": ["EfficientNetForImageClassification"],
        "model_type": "efficientnet",
        "id2label": {str(i): label for i, label in enumerate(labels)},
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def write_hf_model(
    root: Path,
    name: str,
    model: onnx.ModelProto | None = None,
    *,
    flat: bool,
    labels: Sequence[str] | None = None,
    preprocessor: Mapping[str, Any] = HF_PREPROCESSOR_CONFIG,
) -> Path:
    """Write a Hugging Face Optimum style export: ``model.onnx``, ``config.json`` and
    ``preprocessor_config.json``, in ``root/name`` (``flat``) or ``root/name/1``.

    ``model`` defaults to `HF_IMAGENET`'s variant, the one the preprocessor config
    describes. Returns the directory holding the three files.
    """
    directory = root / name if flat else root / name / "1"
    write_model(directory, model if model is not None else HF_IMAGENET.build())
    labels = imagenet_labels() if labels is None else labels
    (directory / "config.json").write_text(json.dumps(hf_config(labels), indent=2))
    (directory / "preprocessor_config.json").write_text(json.dumps(dict(preprocessor), indent=2))
    return directory


#: The ``model.yaml`` of the built-in network's preprocessing (its repository export's).
BUILTIN_YAML: dict[str, Any] = {
    "preprocess": {"scale": 1, "mean": [127, 127, 127], "std": [128, 128, 128]},
}
#: The class `shifted_variant(..., TENCH, 50.0)` always answers.
TENCH = 0


def write_lite_and_tench(root: Path) -> None:
    """Two models: ``lite`` (the built-in network) and ``tench`` (one that always
    answers class `TENCH`), version 1 each."""
    builtin = builtin_onnx()
    write_yaml_model(root, "lite", {1: builtin}, BUILTIN_YAML)
    write_yaml_model(root, "tench", {1: shifted_variant(builtin, TENCH, 50.0)}, BUILTIN_YAML)
