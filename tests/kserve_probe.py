"""Calls a v2 server with KServe's own `InferenceRESTClient`; prints what it saw as JSON.

Run as a separate process (``python -m tests.kserve_probe URL``): KServe's generated
protobuf modules and tritonclient's define the same ``inference.*`` messages, and one
process cannot import both.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from inference_gateway.inference.preprocess import ImageLimits, PreprocessConfig, prepare_image
from tests.images import CAT_PNG, COFFEE_PNG

MODEL = "efficientnet-lite0"


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
            response = await client.infer(url, request, model_name=MODEL)
            (output,) = response.outputs
            scores = output.as_numpy()
            seen[key] = {
                "id": response.id,
                "shape": list(scores.shape),
                "top1": [int(np.argmax(row)) for row in scores],
            }
        return seen
    finally:
        await client.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(probe(sys.argv[1]))))
