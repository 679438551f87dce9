"""The model on MLServer (https://mlserver.readthedocs.io), as its documentation recommends for
a custom model: an ``MLModel`` runtime (``load``/``predict``) served over the Open Inference
Protocol (V2) from a ``model-settings.json`` with adaptive batching on (``max_batch_size``,
``max_batch_time``: MLServer joins concurrent requests into one ``predict``), one parallel
inference worker (its default: one model copy, as this server has). MLServer's REST API takes
V2 JSON (no binary tensors), so an image arrives as a ``BYTES`` tensor of shape ``[1]``, the PNG
in base64 (its ``Base64Codec``), at ``/v2/models/{--model-name}/infer``; the answer is the
``probabilities`` output, FP32 ``[1, 10]``.

``python -m benchmarks.peer_apps.mlserver_app --model-dir D --port P`` writes the settings to a
temporary folder and starts ``mlserver start`` on it."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import Base64Codec, NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from benchmarks.peer_apps.common import arguments, decode, load
from deploy.local_server import free_port

# the longest MLServer waits to fill a batch (its default, 0, turns batching off): a lone
# request waits that long for company
MAX_BATCH_TIME_S = 0.002


class Classifier(MLModel):
    async def load(self) -> bool:
        extra = self.settings.parameters.extra
        self.model = load(Path(extra["model_dir"]), extra["variant"], self.settings.max_batch_size)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        encoded = self.decode(payload.inputs[0], default_codec=Base64Codec)
        images = np.stack([decode(self.model, data) for data in encoded])
        probabilities = self.model.predict(images)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("probabilities", probabilities)],
        )


def settings_folder(args, folder: Path) -> Path:
    server = {
        "host": "127.0.0.1",
        "http_port": args.port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 1,
        "debug": False,  # no access log, as the others
    }
    model = {
        "name": args.model_name,
        "implementation": f"{__spec__.name}.Classifier",
        "max_batch_size": args.max_batch_size,
        "max_batch_time": MAX_BATCH_TIME_S,
        "parameters": {"extra": {"model_dir": str(args.model_dir), "variant": args.variant}},
    }
    (folder / "settings.json").write_text(json.dumps(server))
    (folder / "model-settings.json").write_text(json.dumps(model))
    return folder


if __name__ == "__main__":
    args = arguments()
    folder = Path(tempfile.mkdtemp(prefix="mlserver-")) / args.model_name  # named as the model
    folder.mkdir()
    mlserver = str(Path(sys.executable).parent / "mlserver")  # the venv's own command
    os.execv(mlserver, [mlserver, "start", str(settings_folder(args, folder))])
