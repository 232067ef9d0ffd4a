"""A model as an ONNX graph: what the CPU back-ends run, `galaxymorph export` writes and
`quantization` turns into int8."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from galaxymorph.errors import ModelError
from galaxymorph.models.checkpoint import LoadedModel


def onnx_bytes(loaded: LoadedModel) -> bytes:
    """The model as an ONNX graph (input `images` (N, 3, S, S) in [0, 1]; outputs `logits` (N, K),
    `member_logits` (N, M, K), M = 1 but for ensembles, and `member_features` (N, M, D), which
    `ood_score` measures), with the classes, preprocessing and temperature in its metadata."""
    import onnx
    import torch

    class WithMembers(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            members, features = self.model.member_outputs(images)
            return members.mean(dim=1), members, features

    size = loaded.preprocessing.image_size
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(WithMembers(loaded.model).eval(), (torch.zeros(1, 3, size, size),), buffer, dynamo=False,
                          input_names=["images"], output_names=["logits", "member_logits", "member_features"],
                          dynamic_axes={name: {0: "batch"} for name in ("images", "logits", "member_logits", "member_features")})
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, {
        "galaxymorph_model": loaded.name, "classes": json.dumps(list(loaded.classes)),
        "preprocessing": json.dumps(loaded.preprocessing.to_dict()),
        "temperature": str(loaded.metadata.get("calibration", {}).get("temperature", 1.0)),
        "output": "logits: one per class (softmax), or one sigmoid logit for two classes; divide by temperature; "
                  "member_logits: the same for each ensemble member; member_features: each member's pooled features"})
    return graph.SerializeToString()


def export_onnx(loaded: LoadedModel, path: str | os.PathLike, *, check_images: int = 64,
                tolerance: float = 1e-4) -> tuple[Path, float]:
    """Write the model as ONNX and check ONNX Runtime against torch on random inputs; returns the
    path and the largest difference of the logits (a `ModelError` above `tolerance`)."""
    import onnxruntime
    import torch

    content = onnx_bytes(loaded)
    size = loaded.preprocessing.image_size
    images = np.random.default_rng(0).random((check_images, 3, size, size), dtype=np.float32)
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = loaded.model.eval()(torch.from_numpy(images)).numpy()
    difference = float(np.abs(session.run(["logits"], {"images": images})[0] - expected).max())
    if difference > tolerance:
        raise ModelError(f"ONNX export of {loaded.name} differs from torch by {difference:.2g} (> {tolerance:g})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, difference
