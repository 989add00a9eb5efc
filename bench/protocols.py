"""What each way of asking for a prediction costs: /predict and the Open Inference Protocol.

    .venv/bin/python -m bench.protocols [--concurrency 8,32] [--seconds 8] [--repeats 3]

One gateway (defaults, full observability), the same 512x512 JPEG photo, three requests
that take turns within every repeat: ``/predict`` with a multipart upload; ``/v2/.../infer``
with the JPEG as a ``BYTES`` tensor in the binary extension (what `tritonclient` sends);
and ``/v2/.../infer`` with the tensor preprocessed on the client side (``FP32``, binary).
The table reports medians of images/s and the server's CPU per image.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import tritonclient.http as triton

from bench.common import median, photo_jpeg
from bench.http_bench import BOUNDARY, LUA, OBS_ON, Target, multipart_body, run_wrk, server
from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image

INFER = "/v2/models/efficientnet-lite0/infer"
HEADERS_LUA = LUA.replace(
    'wrk.headers["Content-Type"] = "multipart/form-data; boundary={boundary}"', "{headers}"
)


def _infer_body(inputs: list[triton.InferInput]) -> tuple[bytes, int]:
    outputs = [triton.InferRequestedOutput("logits", class_count=5)]
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, int(json_size)


def _scripts(workdir: Path) -> dict[str, tuple[Path, str]]:
    """Each request kind: its wrk script and the path it posts to."""
    photo = photo_jpeg()
    bodies: dict[str, tuple[bytes, dict[str, str], str]] = {}
    bodies["/predict, multipart JPEG"] = (
        multipart_body(photo),
        {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        "/predict",
    )
    images = triton.InferInput("input", [1], "BYTES")
    images.set_data_from_numpy(np.array([photo], dtype=np.object_))
    body, size = _infer_body([images])
    bodies["/v2 infer, BYTES JPEG (binary)"] = (
        body,
        {"Inference-Header-Content-Length": str(size)},
        INFER,
    )
    tensor = prepare_image(photo, ImageLimits(), PreprocessConfig()).tensor[None]
    preprocessed = triton.InferInput("input", list(tensor.shape), "FP32")
    preprocessed.set_data_from_numpy(tensor, binary_data=True)
    body, size = _infer_body([preprocessed])
    bodies["/v2 infer, FP32 tensor (binary)"] = (
        body,
        {"Inference-Header-Content-Length": str(size)},
        INFER,
    )
    scripts: dict[str, tuple[Path, str]] = {}
    for n, (name, (content, headers, path)) in enumerate(bodies.items()):
        body_path = workdir / f"body-{n}.bin"
        body_path.write_bytes(content)
        lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        script = workdir / f"request-{n}.lua"
        script.write_text(HEADERS_LUA.format(body=body_path, headers=lines))
        scripts[name] = (script, path)
    return scripts


def main() -> None:
    """Run each request kind in turn against one gateway; print a markdown table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="8,32")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    concurrency = [int(c) for c in options.concurrency.split(",")]
    runs: dict[tuple[str, int], list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        scripts = _scripts(workdir)
        target = Target("gateway defaults", "gateway", dict(OBS_ON))
        for repeat in range(options.repeats):
            with server(target, workdir) as running:
                for name, (script, path) in scripts.items():
                    run_wrk(running, script, concurrency[0], 2, path)  # warm up
                    for connections in concurrency:
                        result = run_wrk(running, script, connections, options.seconds, path)
                        if result["error_rate"] > 0:
                            raise SystemExit(f"{name}: {result['error_rate']:.1%} errors")
                        runs[(name, connections)].append(result)
                        print(
                            f"repeat {repeat + 1} {name} c={connections}: "
                            f"{result['rps']:.1f}/s, {result['server_cpu_ms']:.2f} ms CPU",
                            flush=True,
                        )
    print("\n| request | concurrency | images/s | p50 ms | p99 ms | server CPU ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, connections), results in runs.items():
        print(
            f"| {name} | {connections} | {median([r['rps'] for r in results]):.0f} "
            f"| {median([r['p50_ms'] for r in results]):.1f} "
            f"| {median([r['p99_ms'] for r in results]):.1f} "
            f"| {median([r['server_cpu_ms'] for r in results]):.2f} |"
        )


if __name__ == "__main__":
    main()
