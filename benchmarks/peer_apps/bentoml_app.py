"""The model on BentoML (https://docs.bentoml.com), as its adaptive-batching guide recommends:
a ``@bentoml.service`` with one ``@bentoml.api(batchable=True, max_batch_size=...)`` method
taking a list (the dispatcher joins the lists of concurrent requests into one call), one
worker process; an upload arrives as the multipart field ``file``
at ``/predict`` (BentoML stores it as a file and passes its path).

``python -m benchmarks.peer_apps.bentoml_app --model-dir D --port P`` starts ``bentoml serve``
on this module; the service reads the arguments from the environment (BentoML imports the
module again in its worker process)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import bentoml

from benchmarks.peer_apps.common import answer, arguments, decode, load

ARGS_ENV = "CIFAR10_PEER_ARGS"
MAX_BATCH_SIZE = int(json.loads(os.environ.get(ARGS_ENV, "{}")).get("max_batch_size", 16))


@bentoml.service(
    workers=1,  # one model copy with one stream, as this server has
    logging={"access": {"enabled": False}},  # no access log, as the others
)
class Classifier:
    def __init__(self) -> None:
        args = json.loads(os.environ[ARGS_ENV])
        self.model = load(Path(args["model_dir"]), args["variant"], args["max_batch_size"])

    @bentoml.api(
        route="/predict",
        batchable=True,
        max_batch_size=MAX_BATCH_SIZE,
        # ``max_latency_ms`` left at BentoML's 60 s: the dispatcher answers 503 at once to a
        # request it expects to wait longer (its window adapts under that by itself)
    )
    def predict(self, file: list[Path]) -> list[dict]:
        import numpy as np

        images = np.stack([decode(self.model, path.read_bytes(), path.name) for path in file])
        return [answer(self.model, p) for p in self.model.predict(images)]


if __name__ == "__main__":
    args = arguments()
    os.environ[ARGS_ENV] = json.dumps(
        {
            "model_dir": str(args.model_dir),
            "variant": args.variant,
            "max_batch_size": args.max_batch_size,
        }
    )
    serve = [sys.executable, "-m", "bentoml", "serve", f"{__spec__.name}:Classifier"]
    os.execv(sys.executable, serve + ["--host", "127.0.0.1", "--port", str(args.port)])
