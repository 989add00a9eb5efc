"""Calls a v2 server with KServe's own clients; prints what it saw as JSON.

Run as a separate process (``python -m tests.kserve_probe URL [GRPC_ADDRESS]``): KServe's
generated protobuf modules and tritonclient's define the same ``inference.*`` messages,
and one process cannot import both. With ``GRPC_ADDRESS`` (``host:port``) it first waits
for the server to be ready over REST, then calls the gRPC port too with
`InferenceGRPCClient`.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import (
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    InferResponse,
    RESTConfig,
)

from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from tests.images import CAT_PNG, COFFEE_PNG

MODEL = "efficientnet-lite0"
#: How long the probe waits for a server that is still starting to be ready.
READY_WITHIN_SECONDS = 120.0


async def wait_ready(url: str) -> None:
    """Return once ``url`` says it is ready (a server still starting refuses or says no)."""
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=5))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN_SECONDS
    why = "never asked"
    try:
        while loop.time() < deadline:
            try:
                if await client.is_server_ready(url):
                    return
                why = "not ready"
            except Exception as exc:  # not listening yet, or answering 503
                why = repr(exc)
            await asyncio.sleep(0.2)  # polling a server that is starting: no event to wait on
        raise TimeoutError(f"{url} was not ready within {READY_WITHIN_SECONDS:g} s: {why}")
    finally:
        await client.close()


async def probe_grpc(address: str) -> dict[str, object]:
    """Health, readiness, and inference with a preprocessed tensor over gRPC."""
    client = InferenceGRPCClient(address, retries=0, timeout=30)
    try:
        seen: dict[str, object] = {
            "live": await client.is_server_live(),
            "ready": await client.is_server_ready(),
            "model_ready": await client.is_model_ready(MODEL),
        }
        tensor = prepare_image(CAT_PNG.read_bytes(), ImageLimits(), PreprocessConfig()).tensor[None]
        as_tensor = InferInput(name="input", shape=list(tensor.shape), datatype="FP32")
        as_tensor.set_data_from_numpy(tensor)
        request = InferRequest(model_name=MODEL, infer_inputs=[as_tensor], request_id="g-tensor")
        seen["tensor"] = _answer(await client.infer(request))
        return seen
    finally:
        await client.close()


def _answer(response: InferResponse) -> dict[str, object]:
    """What the test checks of an answer: its id, its scores' shape, each row's top-1."""
    (output,) = response.outputs
    scores = output.as_numpy()
    return {
        "id": response.id,
        "shape": list(scores.shape),
        "top1": [int(np.argmax(row)) for row in scores],
    }


async def probe(url: str) -> dict[str, object]:
    """Health, readiness, and inference with a tensor and with two encoded images."""
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    try:
        seen: dict[str, object] = {
            "live": await client.is_server_live(url),
            "ready": await client.is_server_ready(url),
            "model_ready": await client.is_model_ready(url, MODEL),
        }
        cat = CAT_PNG.read_bytes()
        tensor = prepare_image(cat, ImageLimits(), PreprocessConfig()).tensor[None]
        as_tensor = InferInput(name="input", shape=list(tensor.shape), datatype="FP32")
        as_tensor.set_data_from_numpy(tensor, binary_data=False)
        images = InferInput(name="input", shape=[2], datatype="BYTES")
        photos = np.array([cat, COFFEE_PNG.read_bytes()], dtype=np.object_)
        images.set_data_from_numpy(photos, binary_data=True)
        for key, inputs in (("tensor", [as_tensor]), ("images", [images])):
            request = InferRequest(model_name=MODEL, infer_inputs=inputs, request_id=f"k-{key}")
            seen[key] = _answer(await client.infer(url, request, model_name=MODEL))
        return seen
    finally:
        await client.close()


async def main(url: str, grpc_address: str | None) -> dict[str, object]:
    """The REST probe; with ``grpc_address``, after waiting for readiness, both."""
    if grpc_address is None:
        return await probe(url)
    await wait_ready(url)
    return {"rest": await probe(url), "grpc": await probe_grpc(grpc_address)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))))
