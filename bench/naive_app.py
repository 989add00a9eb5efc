"""What a user would write by hand: FastAPI, the model inline, one request at a time.

Same model and backend as the gateway (ONNX Runtime, same preprocessing), no batching,
no thread pools, no telemetry: the forward pass runs on the event loop.

    .venv/bin/python -m bench.naive_app PORT
"""

from __future__ import annotations

import sys
from dataclasses import asdict

import uvicorn
from fastapi import FastAPI, UploadFile

from inference_gateway.config import Settings
from inference_gateway.inference.model import load_configured_model
from inference_gateway.inference.postprocess import top_k
from inference_gateway.inference.preprocess import ImageLimits, prepare_image

settings = Settings(_env_file=None)
model = load_configured_model(settings)
app = FastAPI()


@app.post("/predict")
async def predict(file: UploadFile) -> dict[str, object]:
    """Decode, run and rank inline."""
    prepared = prepare_image(await file.read(), ImageLimits(), model.spec.preprocess)
    logits = model.backend.predict(prepared.tensor[None])
    return {"predictions": [asdict(p) for p in top_k(logits[0], model.spec.labels, 5)]}


@app.get("/ready")
async def ready() -> dict[str, str]:
    """Always ready once imported (the model loads at import)."""
    return {"status": "ready"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
