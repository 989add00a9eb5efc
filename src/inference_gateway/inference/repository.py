"""Reading a model repository: one directory per model, numbered versions, a config.

The layout is Triton's, the one users know::

    DIR/<model-name>/model.yaml          # optional; every key has a default
    DIR/<model-name>/labels.txt          # one label per line, in class-index order
    DIR/<model-name>/<version>/model.onnx

A Hugging Face (Optimum) export is served as it is: ``config.json`` (labels from
``id2label``) and ``preprocessor_config.json`` (resize, crop, rescale, normalise) in the
model directory or in a version directory, with ``model.onnx`` beside them or in
numbered version directories. A ``model.yaml`` beside them overrides any key.

Nothing is loaded here: `scan_repository` reads and checks configs (one broken model
never hides the others) and `resolve_io` checks a version's config against the inputs
and outputs its ONNX graph declares. Every problem is a `ModelConfigError` whose
message names the file and says what to change. Paths in messages are built from the
repository root as it was given (relative stays relative, absolute stays absolute).

Every file read for a model (its directory, model.yaml, the labels file, the Hugging
Face configs, each selected version's directory and everything under it) must resolve,
symbolic links followed, inside the repository: a link that leads out (``labels.txt ->
/proc/self/environ``) refuses the model, so whoever can write into the repository
cannot make the gateway publish other files through labels, metrics or messages. Links
that stay inside keep working, and the root itself may be a link.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from inference_gateway.inference.model import ModelSpec
from inference_gateway.inference.postprocess import Activation
from inference_gateway.inference.preprocess import (
    ONNX_INPUT_TYPES,
    ColorOrder,
    Interpolation,
    Layout,
    PreprocessConfig,
)

#: The file names the repository gives meaning to.
CONFIG_FILE = "model.yaml"
MODEL_FILE = "model.onnx"
DEFAULT_LABELS_FILE = "labels.txt"
HF_CONFIG_FILE = "config.json"
HF_PREPROCESSOR_FILE = "preprocessor_config.json"

_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: A numbered version directory's name.
VERSION_NAME = re.compile(r"[1-9][0-9]{0,17}")
#: The model.yaml ``preprocess`` keys that normalise pixels.
_NORMALISATION = frozenset({"scale", "mean", "std"})

#: PIL's resampling codes as Hugging Face image processors store them.
_HF_RESAMPLE: dict[int, Interpolation] = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
_FLOAT_OUTPUTS = ("tensor(float)", "tensor(float16)", "tensor(double)")
#: Why a file that a symbolic link takes out of the repository is not read.
OUTSIDE_REPOSITORY = (
    "leads outside the model repository (through a symbolic link); only files inside "
    "it are read: copy the file in, or link to one inside"
)


class ModelConfigError(ValueError):
    """A model that cannot be served as it is; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class BatchingOverrides:
    """A model's own batching limits; ``None`` keeps the server's setting."""

    max_batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    max_queue_size: int | None = None


@dataclass(frozen=True, slots=True)
class VersionSource:
    """One version of one model as found on disk: what to load and how to feed it.

    ``path`` is the version's ``model.onnx``; it may not exist (loading then fails with
    a message naming it). ``fingerprint`` changes whenever a file the version depends
    on changes, so a reload can tell which versions to load again.
    """

    spec: ModelSpec
    path: Path
    input_name: str | None
    output_name: str | None
    batching: BatchingOverrides
    fingerprint: str
    #: The repository's resolved root: loading checks again that the version's files
    #: stay inside it (a file may have changed since the scan). None: no check.
    repository: Path | None = None
    #: Where the normalisation (``scale``, ``mean``, ``std``) was given: model.yaml's
    #: keys, or a Hugging Face preprocessor file. A graph that takes uint8 pixels
    #: normalises them itself, so any of these is refused for it (`resolve_io`).
    normalisation: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model directory: the versions its policy selects, or why none can be served."""

    name: str
    versions: tuple[VersionSource, ...]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RepositoryScan:
    """Every model directory of a repository, by name, and what was skipped and why."""

    models: Mapping[str, ModelEntry]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """An ONNX graph input or output as ONNX Runtime describes it."""

    name: str
    shape: tuple[int | str | None, ...]
    type: str


# --- model.yaml -------------------------------------------------------------------------


class _Section(BaseModel):
    """A part of model.yaml: unknown keys and loose types are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Resize(_Section):
    shortest: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_form(self) -> _Resize:
        sized = self.width is not None and self.height is not None
        if (self.shortest is not None) == sized or (self.width is None) != (self.height is None):
            raise ValueError("give either {shortest: S} or {width: W, height: H}")
        return self


class _Crop(_Section):
    center: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_form(self) -> _Crop:
        sized = self.width is not None and self.height is not None
        if (self.center is not None) == sized or (self.width is None) != (self.height is None):
            raise ValueError("give either {center: C} or {width: W, height: H}")
        return self


class _Input(_Section):
    name: str | None = None
    layout: Layout = "NCHW"
    color: ColorOrder = "RGB"


class _Preprocess(_Section):
    resize: _Resize | None = _Resize(shortest=256)
    crop: _Crop | None = _Crop(center=224)
    interpolation: Interpolation = "bilinear"
    scale: float = 1 / 255
    mean: list[float] = [0.0, 0.0, 0.0]
    std: list[float] = [1.0, 1.0, 1.0]

    @field_validator("scale")
    @classmethod
    def _finite_scale(cls, value: float) -> float:
        if not math.isfinite(value) or value == 0:
            raise ValueError(f"must be a finite, non-zero number, not {value}")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, value: list[float]) -> list[float]:
        if len(value) != 3:
            raise ValueError(
                f"needs 3 values, one per channel in the order of input.color, not {len(value)}"
            )
        if not all(math.isfinite(v) for v in value):
            raise ValueError("values must be finite numbers")
        return value

    @field_validator("std")
    @classmethod
    def _no_zero_std(cls, value: list[float]) -> list[float]:
        if any(v == 0 for v in value):
            raise ValueError(f"must not contain 0 (it divides): {value}")
        return value


class _Output(_Section):
    name: str | None = None
    activation: Activation = "softmax"


class _Versions(_Section):
    latest: int | None = Field(None, ge=1)
    all: bool | None = None
    specific: list[int] | None = None

    @model_validator(mode="after")
    def _one_policy(self) -> _Versions:
        given = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of {latest: N}, {all: true}, {specific: [1, 2]}")
        if self.all is False:
            raise ValueError("all must be true; to select fewer, use latest or specific")
        if self.specific is not None:
            if not self.specific or any(v < 1 for v in self.specific):
                raise ValueError("specific must list positive version numbers")
            if len(set(self.specific)) != len(self.specific):
                raise ValueError(f"specific lists a version twice: {self.specific}")
        return self


class _ModelYaml(_Section):
    backend: Literal["onnxruntime"] = "onnxruntime"
    max_batch_size: int | None = Field(None, ge=1, le=256)
    max_batch_delay_ms: float | None = Field(None, ge=0, le=1000)
    max_queue_size: int | None = Field(None, ge=1, le=100_000)
    labels: str | list[str] = DEFAULT_LABELS_FILE
    versions: _Versions = _Versions(latest=1)
    input: _Input = _Input()
    preprocess: _Preprocess = _Preprocess()
    output: _Output = _Output()

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_shape(cls, value: object) -> object:
        # Type problems raise ValueError too: pydantic reports only that (and
        # AssertionError) as a validation error; a TypeError would escape.
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must name a file or list the labels")
            return value
        if not isinstance(value, list):
            raise ValueError("must be a file name or a list of labels")  # noqa: TRY004
        if not value:
            raise ValueError("the list is empty")
        for index, label in enumerate(value):
            if not isinstance(label, str):
                raise ValueError(f"entry {index} is {label!r}, not text (quote it)")  # noqa: TRY004
            if not label.strip():
                raise ValueError(f"entry {index} is blank")
        labels = [label.rstrip() for label in value]
        seen: set[str] = set()
        for label in labels:
            if label in seen:
                raise ValueError(f"{label!r} appears twice; every class needs its own label")
            seen.add(label)
        return labels


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: ErrorDetails) -> str:
    """One pydantic error as a short clause: where, what, and the value given."""
    where = _location(error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    if error["type"] == "model_type":  # pydantic's message names the private class
        message = "must be a mapping of keys to values"
    else:
        message = error["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
    if not error["type"].startswith("value_error"):
        given = error.get("input")
        if given is None or isinstance(given, str | int | float):
            message += f" (got {given!r})"
    return f"{where}: {message}" if where else message


def _read_model_yaml(path: Path) -> _ModelYaml:
    """Parse and validate one model.yaml; any problem is one sentence naming the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ModelConfigError(f"{path}: not valid YAML: {problem}{at}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: must be a mapping of keys to values, not {data!r}")
    try:
        return _ModelYaml.model_validate(data)
    except ValidationError as exc:
        raise ModelConfigError(
            f"{path}: " + "; ".join(_describe(e) for e in exc.errors(include_url=False))
        ) from None


# --- Hugging Face exports ---------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: must hold a JSON object")
    return data


def _hf_labels(path: Path, config: Mapping[str, Any]) -> list[str] | None:
    """The labels of a Hugging Face ``config.json`` (``id2label``), or None without one."""
    raw = config.get("id2label")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ModelConfigError(f"{path}: id2label must map class ids to labels")
    by_id: dict[int, str] = {}
    for key, label in raw.items():
        if not (isinstance(key, str) and re.fullmatch(r"0|[1-9][0-9]*", key)):
            raise ModelConfigError(f"{path}: id2label key {key!r} is not a class id (0, 1, ...)")
        if not isinstance(label, str) or not label.strip():
            raise ModelConfigError(f"{path}: id2label[{key!r}] is {label!r}, not a label")
        by_id[int(key)] = label.rstrip()
    missing = sorted(set(range(len(by_id))) - set(by_id))
    if missing:
        raise ModelConfigError(
            f"{path}: id2label must number its {len(by_id)} classes 0..{len(by_id) - 1}; "
            f"missing {', '.join(map(str, missing[:5]))}"
        )
    return [by_id[i] for i in range(len(by_id))]


def _hf_int(path: Path, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(f"{path}: {key} must be a positive integer, not {value!r}")
    return value


def _hf_size(path: Path, key: str, value: object) -> tuple[int, int] | int:
    """A ``size``/``crop_size``: (width, height), or an int (shortest edge or square)."""
    if isinstance(value, dict):
        if set(value) == {"shortest_edge"}:
            return _hf_int(path, f"{key}.shortest_edge", value["shortest_edge"])
        if set(value) == {"height", "width"}:
            return (
                _hf_int(path, f"{key}.width", value["width"]),
                _hf_int(path, f"{key}.height", value["height"]),
            )
        raise ModelConfigError(
            f"{path}: {key} {value} is not supported; use {{'shortest_edge': N}} or "
            "{'height': H, 'width': W} (or override preprocess in model.yaml)"
        )
    return _hf_int(path, key, value)


def _hf_flag(path: Path, data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ModelConfigError(f"{path}: {key} must be true or false, not {value!r}")
    return value


def _hf_channels(path: Path, data: Mapping[str, Any], key: str) -> tuple[float, float, float]:
    value = data.get(key, 0.5)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value] * 3
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ModelConfigError(f"{path}: {key} needs 3 numbers (R, G, B), not {value!r}")
    if key == "image_std" and any(v == 0 for v in value):
        raise ModelConfigError(f"{path}: {key} must not contain 0 (it divides): {value}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _hf_preprocess(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """`PreprocessConfig` arguments from a ``preprocessor_config.json``.

    Absent keys default as transformers' ViT-like image processors do: resize to
    224×224, rescale by 1/255, normalise with mean and std 0.5, no centre crop,
    bilinear.
    """
    out: dict[str, Any] = {"resize_shortest": None, "resize_to": None, "crop": None}
    if _hf_flag(path, data, "do_resize", True):
        size = _hf_size(path, "size", data.get("size", {"height": 224, "width": 224}))
        out["resize_shortest" if isinstance(size, int) else "resize_to"] = size
    if _hf_flag(path, data, "do_center_crop", False):
        crop = _hf_size(path, "crop_size", data.get("crop_size", {"height": 224, "width": 224}))
        out["crop"] = (crop, crop) if isinstance(crop, int) else crop
    resample = data.get("resample", 2)
    if isinstance(resample, bool) or resample not in _HF_RESAMPLE:
        choices = ", ".join(f"{code} {name}" for code, name in _HF_RESAMPLE.items())
        raise ModelConfigError(f"{path}: resample {resample!r} is not supported; use {choices}")
    out["interpolation"] = _HF_RESAMPLE[resample]
    out["scale"] = 1.0
    if _hf_flag(path, data, "do_rescale", True):
        factor = data.get("rescale_factor", 1 / 255)
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor == 0:
            raise ModelConfigError(f"{path}: rescale_factor must be a non-zero number")
        out["scale"] = float(factor)
    out["mean"], out["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if _hf_flag(path, data, "do_normalize", True):
        out["mean"] = _hf_channels(path, data, "image_mean")
        out["std"] = _hf_channels(path, data, "image_std")
    return out


# --- labels -----------------------------------------------------------------------------


def _file_labels(path: Path, warnings: list[str]) -> list[str]:
    """Labels from a file, one per line in class order.

    Trailing whitespace and trailing blank lines are dropped; a blank line inside is
    an error (it would shift every later class). A label given twice is kept apart
    the way the ImageNet labels are: the later one gets `` (class_id)`` appended,
    with a warning. An inline ``labels`` list is refused instead, since it is written
    by hand for this model.
    """
    if not path.is_file():
        raise ModelConfigError(f"{path}: labels file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelConfigError(f"{path}: cannot be read: {exc}") from None
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ModelConfigError(f"{path}: labels file is empty")
    blank = [str(n) for n, line in enumerate(lines, 1) if not line]
    if blank:
        raise ModelConfigError(
            f"{path}: blank line {', '.join(blank[:5])}; one label per line, in class order"
        )
    return _unique(path, lines, warnings)


def _unique(source: Path, labels: list[str], warnings: list[str]) -> list[str]:
    seen: set[str] = set()
    unique: list[str] = []
    for class_id, label in enumerate(labels):
        if label in seen:
            warnings.append(
                f"{source}: label {label!r} appears again at class {class_id}; "
                f"served as '{label} ({class_id})'"
            )
            label = f"{label} ({class_id})"  # noqa: PLW2901 - the de-duplicated label
        seen.add(label)
        unique.append(label)
    return unique


# --- staying inside the repository ------------------------------------------------------


def confined(root: Path, path: Path) -> Path:
    """``path`` resolved (symbolic links followed), which must lie inside ``root`` (a
    resolved path); else a ModelConfigError naming ``path`` as it was given."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a loop of links
        raise ModelConfigError(f"{path}: cannot be resolved: {exc}") from None
    if not resolved.is_relative_to(root):
        raise ModelConfigError(f"{path}: {OUTSIDE_REPOSITORY}")
    return resolved


def confined_tree(root: Path, top: Path) -> None:
    """Check `confined` for ``top`` and every entry under it, hidden ones included
    (ONNX Runtime reads external weights by any name), following the links to
    directories that stay inside, each directory once."""
    seen: set[Path] = set()
    pending = [top]
    while pending:
        directory = pending.pop()
        real = confined(root, directory)
        if real in seen or not real.is_dir():
            continue
        seen.add(real)
        try:
            entries = sorted(directory.iterdir())
        except OSError as exc:
            raise ModelConfigError(f"{directory}: cannot be read: {exc}") from None
        for entry in entries:
            if entry.is_dir():
                pending.append(entry)
            else:
                confined(root, entry)


# --- one model directory ----------------------------------------------------------------


def _fingerprint(model_dir: Path, version_dir: Path, extra: Iterable[Path]) -> str:
    """sha256 over (path, size, mtime, ctime) of the files a version depends on.

    Those are the files directly in the model directory (model.yaml, labels, Hugging
    Face configs), ``extra`` (a labels file in a subdirectory) and every file under the
    version directory (the graph and any external weights). ctime catches a copy that
    restores the old mtime (``cp -p``, ``rsync -a``).
    """
    files: set[Path] = {p for p in _list(model_dir) if not p.is_dir()}
    files.update(extra)
    for top, dirs, names in os.walk(version_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.update(Path(top) / name for name in names if not name.startswith("."))
    digest = hashlib.sha256()
    for path in sorted(files):
        try:
            st = path.stat()
            facts = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
        except OSError:
            facts = "unreadable"
        digest.update(f"{path.relative_to(model_dir).as_posix()}\0{facts}\n".encode())
    return digest.hexdigest()


def _list(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


class _ModelReader:
    """Reads one model directory into its selected versions (or one ModelConfigError)."""

    def __init__(self, root: Path, model_dir: Path, warnings: list[str]) -> None:
        self.root = root  # resolved: every file read must resolve inside it
        self.dir = model_dir
        self.warnings = warnings
        confined(root, model_dir)
        self.yaml_path: Path | None = model_dir / CONFIG_FILE
        if not self.yaml_path.is_file():
            self.yaml_path = None
        else:
            confined(root, self.yaml_path)
        self.config = _read_model_yaml(self.yaml_path) if self.yaml_path else _ModelYaml()
        self._json: dict[Path, dict[str, Any]] = {}
        self._labels: dict[Path, list[str]] = {}

    def read(self, every_version: bool = False) -> tuple[VersionSource, ...]:
        """The versions the policy selects (``every_version``: all on disk)."""
        if (self.dir / "model.yml").is_file() and self.yaml_path is None:
            self.warnings.append(f"{self.dir / 'model.yml'}: ignored; the config is model.yaml")
        available = self._versions_on_disk()
        chosen = sorted(available) if every_version else self._select(available)
        return tuple(self._version(n, available[n]) for n in chosen)

    def _versions_on_disk(self) -> dict[int, Path]:
        flat = (self.dir / MODEL_FILE).is_file()
        numbered: dict[int, Path] = {}
        for entry in _list(self.dir):
            if not entry.is_dir():
                continue
            if VERSION_NAME.fullmatch(entry.name):
                numbered[int(entry.name)] = entry
            elif not flat:
                self.warnings.append(
                    f"{entry}: not a version number (1, 2, ...); directory ignored"
                )
        if numbered:
            if flat:
                self.warnings.append(
                    f"{self.dir / MODEL_FILE}: ignored; this model's versions are the "
                    f"numbered directories {', '.join(map(str, sorted(numbered)))}"
                )
            return dict(sorted(numbered.items()))
        if flat:
            return {1: self.dir}
        raise ModelConfigError(
            f"{self.dir}: no version found; put the model in {self.dir / '1' / MODEL_FILE} "
            f"(numbered version directories) or in {self.dir / MODEL_FILE}"
        )

    def _select(self, available: Mapping[int, Path]) -> list[int]:
        policy = self.config.versions
        present = sorted(available)
        if policy.all:
            return present
        if policy.specific is not None:
            missing = sorted(set(policy.specific) - set(present))
            if missing:
                raise ModelConfigError(
                    f"{self.yaml_path}: versions.specific names "
                    f"{', '.join(map(str, missing))}, which "
                    f"{'does' if len(missing) == 1 else 'do'} not exist "
                    f"(found: {', '.join(map(str, present))})"
                )
            return sorted(policy.specific)
        assert policy.latest is not None  # noqa: S101 - the schema guarantees one policy
        return present[-policy.latest :]

    def _hf_file(self, version_dir: Path, name: str) -> Path | None:
        for directory in (version_dir, self.dir):
            if (directory / name).is_file():
                return directory / name
        return None

    def _json_of(self, path: Path) -> dict[str, Any]:
        if path not in self._json:
            confined(self.root, path)
            self._json[path] = _read_json(path)
        return self._json[path]

    def _version(self, number: int, version_dir: Path) -> VersionSource:
        config = self.config
        confined_tree(self.root, version_dir)  # the graph and its weights, by any name
        hf_config = self._hf_file(version_dir, HF_CONFIG_FILE)
        hf_pre = self._hf_file(version_dir, HF_PREPROCESSOR_FILE)
        labels, labels_file = self._labels_for(hf_config)
        activation = config.output.activation
        if hf_config is not None and "activation" not in config.output.model_fields_set:
            problem = self._json_of(hf_config).get("problem_type")
            activation = "sigmoid" if problem == "multi_label_classification" else "softmax"
        spec = ModelSpec(
            name=self.dir.name,
            version=str(number),
            labels=tuple(labels),
            preprocess=self._preprocess(hf_pre),
            activation=activation,
        )
        given = sorted(_NORMALISATION & self.config.preprocess.model_fields_set)
        return VersionSource(
            spec=spec,
            path=version_dir / MODEL_FILE,
            input_name=config.input.name,
            output_name=config.output.name,
            batching=BatchingOverrides(
                config.max_batch_size, config.max_batch_delay_ms, config.max_queue_size
            ),
            fingerprint=_fingerprint(self.dir, version_dir, [labels_file] if labels_file else []),
            repository=self.root,
            normalisation=(
                *(f"preprocess.{key} in {self.yaml_path}" for key in given),
                *([f"the normalisation of {hf_pre}"] if hf_pre is not None else []),
            ),
        )

    def _labels_for(self, hf_config: Path | None) -> tuple[list[str], Path | None]:
        """The labels and the labels file they came from (None when inline or id2label)."""
        given = self.config.labels
        if "labels" in self.config.model_fields_set and isinstance(given, list):
            return given, None
        default = self.dir / DEFAULT_LABELS_FILE
        if "labels" not in self.config.model_fields_set and hf_config is not None:
            from_hf = _hf_labels(hf_config, self._json_of(hf_config))
            if from_hf is not None:
                if default.is_file():
                    note = (
                        f"{default}: not used; labels come from {hf_config} (id2label); "
                        f"set 'labels: {DEFAULT_LABELS_FILE}' in model.yaml to use it"
                    )
                    if note not in self.warnings:
                        self.warnings.append(note)
                if hf_config not in self._labels:
                    self._labels[hf_config] = _unique(hf_config, from_hf, self.warnings)
                return self._labels[hf_config], None
            if not default.is_file():
                raise ModelConfigError(
                    f"{default}: labels file not found, and {hf_config} has no id2label"
                )
        assert isinstance(given, str)  # noqa: S101 - lists returned above
        relative = Path(given)
        if relative.is_absolute() or ".." in relative.parts:
            raise ModelConfigError(
                f"{self.yaml_path}: labels must name a file inside {self.dir}, not {given!r}"
            )
        path = self.dir / relative
        if path not in self._labels:
            confined(self.root, path)
            self._labels[path] = _file_labels(path, self.warnings)
        return self._labels[path], path

    def _preprocess(self, hf_pre: Path | None) -> PreprocessConfig:
        """yaml defaults, then the Hugging Face processor's values, then yaml's own keys."""
        yaml_pre = self.config.preprocess
        kwargs = _preprocess_kwargs(yaml_pre, _Preprocess.model_fields)
        if hf_pre is not None:
            kwargs.update(_hf_preprocess(hf_pre, self._json_of(hf_pre)))
        kwargs.update(_preprocess_kwargs(yaml_pre, yaml_pre.model_fields_set))
        try:
            return PreprocessConfig(
                **kwargs, layout=self.config.input.layout, color=self.config.input.color
            )
        except ValueError as exc:
            sources = [str(p) for p in (self.yaml_path, hf_pre) if p is not None]
            raise ModelConfigError(f"{', '.join(sources) or self.dir}: {exc}") from None


def _preprocess_kwargs(pre: _Preprocess, keys: Iterable[str]) -> dict[str, Any]:
    """The `PreprocessConfig` arguments that the given model.yaml ``preprocess`` keys set."""
    out: dict[str, Any] = {}
    for key in keys:
        if key == "resize":
            resize = pre.resize
            out["resize_shortest"] = resize.shortest if resize else None
            out["resize_to"] = (
                (resize.width, resize.height) if resize and resize.shortest is None else None
            )
        elif key == "crop":
            crop = pre.crop
            out["crop"] = (
                None
                if crop is None
                else (crop.center, crop.center)
                if crop.center is not None
                else (crop.width, crop.height)
            )
        elif key in ("mean", "std"):
            out[key] = tuple(getattr(pre, key))
        else:
            out[key] = getattr(pre, key)
    return out


def scan_repository(root: Path) -> RepositoryScan:
    """Read every model's config. Never raises for one broken model (it gets `error`);
    raises ModelConfigError only when ``root`` itself is missing or not a directory.

    Entries whose names start with a dot (``.git``, Kubernetes' ``..data``) and plain
    files are passed over silently; directories with names that are not model names
    are skipped with a warning.
    """
    if not root.exists():
        raise ModelConfigError(f"{root}: the model repository does not exist")
    if not root.is_dir():
        raise ModelConfigError(f"{root}: the model repository is not a directory")
    try:
        entries = _list(root)
    except OSError as exc:
        raise ModelConfigError(f"{root}: cannot list the model repository: {exc}") from None
    base = root.resolve()
    warnings: list[str] = []
    models: dict[str, ModelEntry] = {}
    for entry in entries:
        if not entry.is_dir():
            if entry.suffix == ".onnx":
                warnings.append(f"{entry}: ignored; a model goes in {root}/<name>/1/{MODEL_FILE}")
            continue
        if not _MODEL_NAME.fullmatch(entry.name):
            warnings.append(
                f"{entry}: skipped; a model name is 1-64 of a-z 0-9 . _ - "
                "starting with a letter or digit"
            )
            continue
        models[entry.name] = _scan_model(base, entry, warnings)
    return RepositoryScan(models=MappingProxyType(models), warnings=tuple(warnings))


def model_versions(root: Path, name: str) -> ModelEntry:
    """Every version of one model on disk, whatever its policy selects (what the
    commands that work on one version choose from)."""
    return _scan_model(root.resolve(), root / name, [], every_version=True)


def _scan_model(
    root: Path, model_dir: Path, warnings: list[str], every_version: bool = False
) -> ModelEntry:
    notes: list[str] = []
    try:
        versions = _ModelReader(root, model_dir, notes).read(every_version)
    except ModelConfigError as exc:
        return ModelEntry(model_dir.name, (), str(exc))
    except OSError as exc:
        return ModelEntry(model_dir.name, (), f"{model_dir}: cannot be read: {exc}")
    finally:
        warnings.extend(notes)
    return ModelEntry(model_dir.name, versions)


# --- the graph against the config -------------------------------------------------------


def _static(dim: int | str | None) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _shape(shape: Sequence[int | str | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _names(tensors: Sequence[TensorInfo]) -> str:
    return ", ".join(repr(t.name) for t in tensors) or "none"


def _pick(where: Path, kind: str, name: str | None, tensors: Sequence[TensorInfo]) -> TensorInfo:
    if name is not None:
        for tensor in tensors:
            if tensor.name == name:
                return tensor
        raise ModelConfigError(
            f"{where}: has no {kind} named {name!r}; its {kind}s are {_names(tensors)} "
            f"(set {kind}.name in model.yaml)"
        )
    if not tensors:
        raise ModelConfigError(f"{where}: the graph has no {kind}")
    if kind == "input" and len(tensors) > 1:
        raise ModelConfigError(
            f"{where}: the graph has {len(tensors)} inputs ({_names(tensors)}); "
            "set input.name in model.yaml to the image input"
        )
    return tensors[0]


def resolve_io(
    source: VersionSource, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]
) -> tuple[str, str]:
    """Check a version's config against its graph; return (input name, output name).

    Raises ModelConfigError naming ``source.path`` and the problem. Symbolic dimensions
    always pass; static ones must fit the preprocessing, the batching and the labels.
    """
    where = source.path
    image = _pick(where, "input", source.input_name, inputs)
    _check_input(source, image)
    scores = _pick(where, "output", source.output_name, outputs)
    _check_output(source, scores, outputs)
    return image.name, scores.name


def fed_spec(source: VersionSource, inputs: Sequence[TensorInfo]) -> ModelSpec:
    """The version's spec with what its graph's image input takes (`resolve_io` has
    checked it is one the gateway feeds): float32, float16, or uint8 pixels."""
    image = _pick(source.path, "input", source.input_name, inputs)
    kind = ONNX_INPUT_TYPES[image.type]
    pre = source.spec.preprocess
    if kind == pre.input_type:
        return source.spec
    return replace(source.spec, preprocess=replace(pre, input_type=kind))


def _check_input(source: VersionSource, tensor: TensorInfo) -> None:
    where, name, shape = source.path, tensor.name, tensor.shape
    pre = source.spec.preprocess
    if tensor.type not in ONNX_INPUT_TYPES:
        raise ModelConfigError(
            f"{where}: input {name!r} takes {tensor.type}; the gateway feeds images as "
            "tensor(float), tensor(float16) or tensor(uint8) (pixels as they are)"
        )
    if tensor.type == "tensor(uint8)" and source.normalisation:
        raise ModelConfigError(
            f"{where}: input {name!r} takes tensor(uint8): the gateway feeds it the resized "
            "and cropped pixels as they are (0-255) and the graph normalises them, so "
            f"scale, mean and std must not be set; remove {', '.join(source.normalisation)}"
        )
    if len(shape) != 4:
        raise ModelConfigError(
            f"{where}: input {name!r} has shape {_shape(shape)}; an image input is 4-D "
            f"({'batch, 3, height, width' if pre.layout == 'NCHW' else 'batch, height, width, 3'})"
        )
    channel, other = (1, 3) if pre.layout == "NCHW" else (3, 1)
    channels = _static(shape[channel])
    if channels is not None and channels != 3:
        hint = ""
        if _static(shape[other]) == 3:
            hint = f"; set input.layout: {'NHWC' if pre.layout == 'NCHW' else 'NCHW'} in model.yaml"
        raise ModelConfigError(
            f"{where}: input {name!r} has shape {_shape(shape)}: {pre.layout} puts the 3 "
            f"colour channels at dimension {channel}, which is {channels}{hint}"
        )
    h_dim, w_dim = (2, 3) if pre.layout == "NCHW" else (1, 2)
    width, height = pre.output_size
    graph_h, graph_w = _static(shape[h_dim]), _static(shape[w_dim])
    if (graph_w is not None and graph_w != width) or (graph_h is not None and graph_h != height):
        raise ModelConfigError(
            f"{where}: input {name!r} takes {graph_w or '?'}×{graph_h or '?'} images "
            f"(width×height) but the preprocessing gives {width}×{height}; set "
            "preprocess.crop (or preprocess.resize) in model.yaml to the model's size"
        )
    batch = _static(shape[0])
    max_batch = source.batching.max_batch_size
    if batch == 1 and max_batch != 1:
        raise ModelConfigError(
            f"{where}: input {name!r} has a fixed batch size of 1 but batches of up to "
            f"{max_batch or 'the server limit (MAX_BATCH_SIZE)'} would be sent; set "
            "max_batch_size: 1 in model.yaml, or export the model with a dynamic batch dimension"
        )
    if batch is not None and batch > 1:
        raise ModelConfigError(
            f"{where}: input {name!r} has a fixed batch size of {batch}; the gateway sends "
            "batches of varying size: export the model with a dynamic batch dimension"
        )


def _check_output(source: VersionSource, tensor: TensorInfo, outputs: Sequence[TensorInfo]) -> None:
    where, name, shape = source.path, tensor.name, tensor.shape
    if tensor.type not in _FLOAT_OUTPUTS:
        raise ModelConfigError(
            f"{where}: output {name!r} is {tensor.type}, not class scores; set output.name "
            f"in model.yaml to the scores output (outputs: {_names(outputs)})"
        )
    if len(shape) != 2:
        raise ModelConfigError(
            f"{where}: output {name!r} has shape {_shape(shape)}; the scores must be 2-D "
            "(batch, classes)"
        )
    classes = _static(shape[1])
    labels = len(source.spec.labels)
    if classes is not None and classes != labels:
        raise ModelConfigError(
            f"{where}: output {name!r} has {classes} classes but there are {labels} labels"
        )
