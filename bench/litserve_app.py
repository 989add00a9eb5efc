"""The peer: LitServe serving the same model, backend and preprocessing, with its batching.

.venv/bin/python -m bench.litserve_app PORT [MAX_BATCH_SIZE]
"""

from __future__ import annotations

import sys
from dataclasses import asdict

import litserve as ls
import numpy as np
import numpy.typing as npt

from inference_gateway.config import Settings
from inference_gateway.inference.model import LoadedModel, load_configured_model
from inference_gateway.inference.postprocess import top_k
from inference_gateway.inference.preprocess import ImageLimits, prepare_image


class ClassifierAPI(ls.LitAPI):  # type: ignore[misc]
    """EfficientNet-Lite0 on ONNX Runtime, LitServe's hooks."""

    def setup(self, device: str) -> None:
        self.model: LoadedModel = load_configured_model(Settings(_env_file=None))

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # LitServe infers the request type from the annotation: none means the form
        data = request["file"].file.read()
        return prepare_image(data, ImageLimits(), self.model.spec.preprocess).tensor

    def batch(self, inputs: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
        return np.stack(inputs)

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.model.backend.predict(batch)

    def unbatch(self, output: npt.NDArray[np.float32]) -> list[npt.NDArray[np.float32]]:
        return list(output)

    def encode_response(self, logits: npt.NDArray[np.float32]) -> dict[str, object]:
        return {"predictions": [asdict(p) for p in top_k(logits, self.model.spec.labels, 5)]}


if __name__ == "__main__":
    port = int(sys.argv[1])
    max_batch = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    server = ls.LitServer(
        ClassifierAPI(max_batch_size=max_batch, batch_timeout=0.005),
        accelerator="cpu",
        workers_per_device=1,
        timeout=30,
    )
    server.run(port=port, host="127.0.0.1", log_level="warning", generate_client_file=False)
