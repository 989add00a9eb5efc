"""Command line: ``inference-gateway serve``, ``predict IMAGE...``, ``export-onnx``,
``profile MODEL --images DIR`` and ``keys add``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from inference_gateway.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from inference_gateway.inference.model import LoadedModel
    from inference_gateway.inference.repository import VersionSource

DEFAULT_APP = "inference_gateway.main:app"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inference-gateway", description="Observable image-classification gateway."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the HTTP API (settings from env and .env)")
    serve.add_argument("--host", help="bind address (HOST)")
    serve.add_argument("--port", type=int, help="TCP port (PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (WORKERS)")
    serve.add_argument(
        "--app",
        default=DEFAULT_APP,
        help="ASGI app to serve as module:attribute, e.g. your own create_app() with "
        f"another model loader (default {DEFAULT_APP})",
    )
    predict = sub.add_parser("predict", help="classify local image files, no server")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    predict.add_argument("--top-k", type=int, default=5, help="classes per image (1-20)")
    predict.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    export_onnx = sub.add_parser(
        "export-onnx", help="export the model to ONNX in MODEL_CACHE_DIR ahead of serving"
    )
    export_onnx.add_argument(
        "--repository",
        type=Path,
        metavar="DIR",
        help="also write it into the model repository DIR as DIR/<model>/{model.yaml,"
        "labels.txt,<version>/model.onnx}: the example to copy for your own models",
    )
    export_onnx.add_argument(
        "--force", action="store_true", help="with --repository: replace an existing export"
    )
    profile = sub.add_parser(
        "profile",
        help="write a version's reference.json (model-quality signals) from images that "
        "look like production",
    )
    _version_arguments(profile, "the version to profile (default: the highest)")
    profile.add_argument(
        "--images", type=Path, required=True, metavar="DIR", help="the reference images"
    )
    quantize = sub.add_parser(
        "quantize",
        help="write an INT8 version of a repository version (ONNX Runtime static "
        "quantization), if it agrees with the source on held-out images",
    )
    _version_arguments(
        quantize, "the version to quantize (default: the highest that is not itself INT8)"
    )
    quantize.add_argument(
        "--calibration", type=Path, required=True, metavar="DIR",
        help="images like production's (every 3rd is held out unless --holdout is given)",
    )  # fmt: skip
    quantize.add_argument(
        "--holdout", type=Path, metavar="DIR", help="images to judge agreement on instead"
    )
    quantize.add_argument("--to", help="the new version (default: the highest on disk + 1)")
    quantize.add_argument(
        "--min-agreement", type=float, default=None, metavar="SHARE",
        help="top-1 agreement with the source on confident hold-out images needed to "
        "write the version (default 0.95)",
    )  # fmt: skip
    keys = sub.add_parser("keys", help="manage API keys (API_KEYS_FILE)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    add = keys_sub.add_parser(
        "add", help="append a new random key NAME to the keys file and print the key once"
    )
    add.add_argument("name", help="the key's id: what the access log shows")
    add.add_argument("--file", type=Path, help="the keys file (default: API_KEYS_FILE)")
    return parser


def _version_arguments(parser: argparse.ArgumentParser, version_help: str) -> None:
    """The arguments of a command that works on one repository version: the model,
    ``--version`` and ``--repository``."""
    parser.add_argument("model", help="the model's name in the repository")
    parser.add_argument("--version", help=version_help)
    parser.add_argument(
        "--repository", type=Path, metavar="DIR", help="the model repository (MODEL_REPOSITORY)"
    )


def add_api_key(settings: Settings, name: str, path: Path | None) -> int:
    """``keys add``: a new key in the keys file, printed once (only its hash is kept)."""
    from inference_gateway.api.keys import KeysFileError, add_key

    target = path or settings.api_keys_file
    if target is None:
        sys.stderr.write("keys add: set API_KEYS_FILE or pass --file\n")
        return 2
    try:
        key = add_key(target, name)
    except (OSError, KeysFileError) as exc:
        sys.stderr.write(f"keys add: {exc}\n")
        return 1
    sys.stdout.write(f"{key}\n")
    sys.stderr.write(
        f"Added key {name!r} to {target}. This is the only time the key is shown; a running "
        "server picks it up within a second.\n"
    )
    return 0


def _stopped(signum: int, frame: FrameType | None) -> None:
    """A signal arriving after uvicorn finished draining: nothing left to do."""


def serve(settings: Settings, app: str = DEFAULT_APP) -> int:
    """Run uvicorn with the gateway; several workers share metrics via a multiprocess dir.

    With several workers and ``METRICS_PORT``, this (parent) process serves the summed
    metrics there; with one worker the app serves its own. The built-in model that
    could never be served here (not exported, no export extra) is said and refused.
    """
    import uvicorn

    from inference_gateway.inference.onnx_export import builtin_unavailable

    unavailable = builtin_unavailable(settings) if app == DEFAULT_APP else None
    if unavailable is not None:
        sys.stderr.write(f"{unavailable}\n")
        return 2

    from inference_gateway.api.protocol import http_protocol
    from inference_gateway.observability.logging import setup_logging
    from inference_gateway.observability.metrics import (
        multiprocess_registry,
        prepare_multiprocess_dir,
        serve_metrics_port,
    )
    from inference_gateway.shutdown import server_grace_seconds

    # Workers import `inference_gateway.main`, which reads the environment: pass the
    # command-line choices on through it.
    workers = settings.effective_workers
    os.environ.update({"HOST": settings.host, "PORT": str(settings.port), "WORKERS": str(workers)})
    created: str | None = None
    state_dir: str | None = None
    if workers > 1:
        # Each worker reports ready only when all are (inference/workers.py).
        state_dir = tempfile.mkdtemp(prefix="inference-gateway-workers-")
        os.environ["WORKER_STATE_DIR"] = state_dir
    if workers > 1 and settings.enable_metrics:
        directory = settings.prometheus_multiproc_dir
        if directory is None:
            directory = created = tempfile.mkdtemp(prefix="inference-gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiprocess_dir(directory))
    setup_logging(
        settings.log_level.value,
        settings.effective_log_format.value,
        traceback_locals=settings.log_traceback_locals,
    )
    stop_metrics_port = None
    multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if settings.metrics_port is not None and settings.enable_metrics and multiprocess_dir:
        stop_metrics_port = serve_metrics_port(
            multiprocess_registry(multiprocess_dir), settings.host, settings.metrics_port
        )
    # Uvicorn drains on SIGTERM/SIGINT, restores the previous handlers and re-raises the
    # signal. With these handlers the re-raised signal is a no-op, so a graceful stop
    # exits 0 rather than dying by the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped)
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            workers=workers,
            http=http_protocol(  # type: ignore[arg-type]
                settings.request_header_timeout,
                settings.max_header_bytes,
                settings.max_header_count,
            ),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=server_grace_seconds(settings.graceful_shutdown_seconds),
            ws="none",  # no WebSocket routes: an upgrade request is an ordinary request
            server_header=False,
        )
    finally:
        if stop_metrics_port is not None:
            stop_metrics_port()
    for directory in (created, state_dir):
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def predict(images: Sequence[Path], top_k: int, as_json: bool, settings: Settings) -> int:
    """Classify files in-process and print a table (or JSON lines); 1 if any failed."""
    from inference_gateway.errors import InvalidImageException
    from inference_gateway.inference.catalog import load_builtin
    from inference_gateway.inference.postprocess import top_k as rank
    from inference_gateway.inference.preprocess import ImageLimits, harden_pillow, prepare_image

    if not 1 <= top_k <= 20:
        sys.stderr.write("--top-k must be between 1 and 20\n")
        return 2
    harden_pillow()
    try:  # the built-in model as `serve` loads it: from its repository copy, no torch
        model = load_builtin(settings)
    except ValueError as exc:  # the export extra missing, a broken copy
        sys.stderr.write(f"predict: {exc}\n")
        return 2
    limits = ImageLimits(settings.max_image_pixels, settings.max_image_side)
    failed = False
    for path in images:
        try:
            prepared = prepare_image(path.read_bytes(), limits, model.spec.preprocess)
        except (OSError, InvalidImageException) as exc:
            failed = True
            message = exc.detail if isinstance(exc, InvalidImageException) else exc.strerror
            if as_json:
                print(json.dumps({"image": str(path), "error": message}))
            else:
                print(f"{path}: error: {message}")
            continue
        logits = model.backend.predict(prepared.tensor[None])
        predictions = rank(logits[0], model.spec.labels, top_k)
        if as_json:
            print(
                json.dumps(
                    {
                        "image": str(path),
                        "predictions": [
                            {"class_id": p.class_id, "label": p.label, "confidence": p.confidence}
                            for p in predictions
                        ],
                    }
                )
            )
            continue
        print(f"{path} ({prepared.info.format}, {prepared.info.width}x{prepared.info.height})")
        print(f"  {'rank':>4}  {'class':>5}  {'confidence':>10}  label")
        for rank_no, p in enumerate(predictions, start=1):
            print(f"  {rank_no:>4}  {p.class_id:>5}  {p.confidence:>10.4f}  {p.label}")
    return 1 if failed else 0


def export(settings: Settings, repository: Path | None = None, force: bool = False) -> int:
    """Export the configured model to ONNX (a no-op when the file exists), or into the
    model repository ``repository``, leaving an existing export there unless ``force``."""
    from inference_gateway.inference.model import ensure_model_onnx
    from inference_gateway.inference.onnx_export import onnx_path

    if repository is not None:
        return export_repository(settings, repository, force)
    if force:
        sys.stderr.write("--force applies only with --repository\n")
        return 2
    target = onnx_path(settings.model_cache_dir, settings.model_name, settings.model_version)
    existed = target.exists()
    try:
        ensure_model_onnx(settings.model_name, settings.model_version, settings.model_cache_dir)
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    print(f"{target} ({'already there' if existed else 'exported'})")
    return 0


def export_repository(settings: Settings, root: Path, force: bool) -> int:
    """Write the configured model into the model repository ``root`` and say what was written."""
    from inference_gateway.inference.onnx_export import export_to_repository

    try:
        result = export_to_repository(
            root,
            settings.model_cache_dir,
            name=settings.model_name,
            version=settings.model_version,
            force=force,
        )
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(f"cannot write to {root}: {exc}\n")
        return 1
    if not result.written:
        print(f"{result.directory} already exists; left as it is (--force replaces it)")
        return 0
    for path in result.files:
        print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0


class _CommandError(Exception):
    """A command that cannot go on: the message for stderr and the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _version_source(
    settings: Settings,
    model: str,
    version: str | None,
    root: Path | None,
    eligible: Callable[[VersionSource], bool] = lambda _: True,
) -> VersionSource:
    """The repository version a command works on: ``version``, or the highest one
    ``eligible`` accepts."""
    from inference_gateway.inference.repository import ModelConfigError, model_versions

    root = root or settings.model_repository
    if root is None:
        raise _CommandError(
            "set MODEL_REPOSITORY or pass --repository (the built-in model: "
            "`inference-gateway export-onnx --repository DIR` first)"
        )
    if not (root / model).is_dir():
        raise _CommandError(f"{model}: no such model in {root}")
    try:
        entry = model_versions(root, model)
    except (OSError, ModelConfigError) as exc:
        raise _CommandError(str(exc)) from None
    if entry.error is not None or not entry.versions:
        raise _CommandError(f"{model}: {entry.error or 'no version'}")
    by_version = {v.spec.version: v for v in entry.versions}
    candidates = [v for v in entry.versions if eligible(v)]
    if not version and not candidates:
        raise _CommandError(f"{model}: no version to work on (name one with --version)")
    source = by_version.get(version) if version else candidates[-1]
    if source is None:
        raise _CommandError(f"{model} has no version {version} (found: {', '.join(by_version)})")
    return source


def profile(
    settings: Settings,
    model: str,
    images: Path,
    version: str | None = None,
    repository: Path | None = None,
) -> int:
    """``profile``: run a repository version over reference images and write its
    ``reference.json``, showing progress on stderr."""
    try:
        return _profile(settings, model, images, version, repository)
    except _CommandError as exc:
        sys.stderr.write(f"profile: {exc}\n")
        return exc.status


def _profile(
    settings: Settings, model: str, images: Path, version: str | None, repository: Path | None
) -> int:
    from inference_gateway.inference.preprocess import ImageLimits, harden_pillow
    from inference_gateway.inference.profiler import image_files, quiet_signals, write_reference
    from inference_gateway.inference.profiler import profile as run_profile

    source = _version_source(settings, model, version, repository)
    if not images.is_dir():
        raise _CommandError(f"{images} is not a directory")
    harden_pillow()
    files = image_files(images)
    loaded = _load(source, settings)

    live = sys.stderr.isatty()  # one line rewritten in place, or a line per tenth

    def show(done: int, total: int) -> None:
        step = 25 if live else max(total // 10, 1)
        if done == total or done % step == 0:
            start = "\r" if live else ""
            end = "\n" if done == total or not live else ""
            sys.stderr.write(f"{start}profile: {done}/{total} files{end}")
            sys.stderr.flush()

    limits = ImageLimits(settings.max_image_pixels, settings.max_image_side)
    try:
        result = run_profile(loaded, files, limits, source.path, show)
    except ValueError as exc:
        raise _CommandError(str(exc), 1) from None
    finally:
        loaded.backend.close()
    for path, why in result.skipped[:5]:
        sys.stderr.write(f"profile: skipped {path}: {why}\n")
    if len(result.skipped) > 5:
        sys.stderr.write(f"profile: skipped {len(result.skipped) - 5} more files\n")
    reference = result.reference
    try:
        target = write_reference(source.path.parent, reference)
    except OSError as exc:
        raise _CommandError(f"cannot write into {source.path.parent}: {exc.strerror}", 1) from None
    print(
        f"{target}: {reference.images} images, {len(reference.seen_classes)} classes "
        f"predicted (top-1 confidence {reference.confidence_mean:.2f} ± "
        f"{reference.confidence_stddev:.2f}), model sha256 {reference.model_sha256[:12]}…"
    )
    quiet = quiet_signals(reference)
    if quiet:
        sys.stderr.write(
            f"profile: with {reference.images} images, drift alerts on {', '.join(quiet)} "
            "can never fire (noise alone would reach the threshold); profile more images\n"
        )
    return 0


def quantize(settings: Settings, args: argparse.Namespace) -> int:
    """``quantize``: an INT8 version of a repository version, written only when it agrees
    with the source on the hold-out images; progress on stderr."""
    try:
        return _quantize(settings, args)
    except _CommandError as exc:
        sys.stderr.write(f"quantize: {exc}\n")
        return exc.status


def _quantize_source(settings: Settings, args: argparse.Namespace) -> tuple[VersionSource, str]:
    """The version ``quantize`` starts from and the version it writes, checked."""
    import importlib.util

    from inference_gateway.inference.quantization import QUANTIZATION_FILE, is_quantized
    from inference_gateway.inference.repository import VERSION_NAME

    if importlib.util.find_spec("onnx") is None:
        raise _CommandError(
            "ONNX Runtime's quantization needs the onnx package: "
            "pip install 'inference-gateway[quantize]'"
        )
    source = _version_source(
        settings, args.model, args.version, args.repository, lambda v: not is_quantized(v)
    )
    if is_quantized(source):
        raise _CommandError(
            f"version {source.spec.version} is already INT8 ({QUANTIZATION_FILE} beside its "
            "model.onnx); quantize the version it came from"
        )
    if not VERSION_NAME.fullmatch(source.path.parent.name):
        raise _CommandError(
            f"{source.path} is directly in the model's directory; move it into "
            f"{source.path.parent / '1'}/ (numbered versions) to add an INT8 version beside it"
        )
    target = args.to or str(_next_version(source.path.parent.parent))
    if not VERSION_NAME.fullmatch(target):
        raise _CommandError(f"--to is a version number (1, 2, ...), not {target!r}")
    return source, target


def _quantize(settings: Settings, args: argparse.Namespace) -> int:
    from inference_gateway.inference.preprocess import ImageLimits, harden_pillow
    from inference_gateway.inference.profiler import image_files
    from inference_gateway.inference.quantization import (
        DEFAULT_MIN_AGREEMENT,
        QuantizationError,
        read_images,
        split_holdout,
    )
    from inference_gateway.inference.quantization import quantize as run_quantize
    from inference_gateway.inference.repository import ModelConfigError

    min_agreement = DEFAULT_MIN_AGREEMENT if args.min_agreement is None else args.min_agreement
    if not 0 < min_agreement <= 1:
        raise _CommandError(f"--min-agreement is a share in (0, 1], not {min_agreement}")
    for directory in (args.calibration, args.holdout):
        if directory is not None and not directory.is_dir():
            raise _CommandError(f"{directory} is not a directory")
    source, target = _quantize_source(settings, args)
    calibration_files = image_files(args.calibration)
    if not calibration_files:
        raise _CommandError(f"{args.calibration} holds no files")
    if args.holdout is None:
        calibration_files, holdout_files = split_holdout(calibration_files)
    else:
        holdout_files = image_files(args.holdout)
    harden_pillow()
    limits = ImageLimits(settings.max_image_pixels, settings.max_image_side)
    progress = _progress_line("quantize")
    progress(
        f"reading {len(calibration_files)} calibration and {len(holdout_files)} hold-out files"
    )
    loaded = _load(source, settings)
    loaded.backend.close()
    input_name, output_name = loaded.input_name, loaded.output_name
    calibration, skipped = read_images(calibration_files, loaded.spec.preprocess, limits)
    holdout, skipped_holdout = read_images(holdout_files, loaded.spec.preprocess, limits)
    skipped += skipped_holdout
    for line in skipped[:5]:
        progress(f"skipped {line}")
    try:
        written, report = run_quantize(
            source, input_name, output_name, calibration, holdout, target, min_agreement,
            progress, skipped,
        )  # fmt: skip
    except (QuantizationError, ModelConfigError) as exc:
        raise _CommandError(str(exc), 1) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise _CommandError(f"{where}{exc.strerror or exc}", 1) from None
    speed = report.speed
    print(
        f"{written}: INT8 ({report.method}), top-1 agreement with version "
        f"{report.source_version} {report.confident_agreement:.1%} on "
        f"{report.holdout_confident_images} confident hold-out images "
        f"({report.top1_agreement:.1%} on all {report.holdout_images}), top-5 overlap "
        f"{report.top5_overlap:.1%}, {speed['int8_images_per_second']:.0f} against "
        f"{speed['source_images_per_second']:.0f} images/s ({speed['ratio']:.2f}×, one thread)"
    )
    return 0


def _load(source: VersionSource, settings: Settings) -> LoadedModel:
    """A repository version opened and checked against its graph (a config error is a
    `_CommandError`)."""
    from inference_gateway.inference.catalog import load_version

    try:
        return load_version(source, settings.effective_model_threads)
    except (OSError, ValueError) as exc:
        raise _CommandError(str(exc), 1) from None


def _next_version(model_dir: Path) -> int:
    """One more than the highest numbered directory of a model."""
    from inference_gateway.inference.repository import VERSION_NAME

    numbers = [int(p.name) for p in model_dir.iterdir() if VERSION_NAME.fullmatch(p.name)]
    return max(numbers, default=0) + 1


def _progress_line(command: str) -> Callable[[str], None]:
    """Progress on stderr, a line each, prefixed with the command."""

    def show(line: str) -> None:
        sys.stderr.write(f"{command}: {line}\n")
        sys.stderr.flush()

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inference-gateway`` console script."""
    args = _parser().parse_args(argv)
    overrides = {}
    if args.command == "serve":
        overrides = {
            k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
            if v is not None
        }  # fmt: skip
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    commands: dict[str, Callable[[], int]] = {
        "serve": lambda: serve(settings, args.app),
        "export-onnx": lambda: export(settings, args.repository, args.force),
        "keys": lambda: add_api_key(settings, args.name, args.file),
        "profile": lambda: profile(
            settings, args.model, args.images, args.version, args.repository
        ),
        "quantize": lambda: quantize(settings, args),
        "predict": lambda: predict(args.images, args.top_k, args.json, settings),
    }
    return commands[args.command]()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
