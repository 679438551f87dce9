"""The model on LitServe (https://lightning.ai/docs/litserve), as its documentation recommends
for batched CPU inference: a ``LitAPI`` with ``decode_request``/``batch``/``predict``/
``unbatch``/``encode_response``, ``max_batch_size`` and a ``batch_timeout``, one worker process;
an upload arrives as the multipart field ``file`` at ``/predict``."""

from __future__ import annotations

import litserve as ls
import numpy as np

from benchmarks.peer_apps.common import answer, arguments, decode, load

# LitServe's default of 0 makes its batching loop poll without pause (measured: a whole core
# while idle); with 2 ms it waits on its queue a millisecond at a time (0.16 of a core idle,
# measured) and a lone request waits up to 2 ms for company.
BATCH_TIMEOUT_S = 0.002


class Classifier(ls.LitAPI):
    def __init__(self, args, **kwargs) -> None:
        super().__init__(**kwargs)
        self.args = args

    def setup(self, device) -> None:
        self.model = load(self.args.model_dir, self.args.variant, self.args.max_batch_size)

    def decode_request(self, request):
        upload = request["file"]
        return decode(self.model, upload.file.read(), upload.filename or "upload")

    def batch(self, inputs):
        return np.stack(inputs)

    def predict(self, x):
        return self.model.predict(x)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return answer(self.model, output)


if __name__ == "__main__":
    args = arguments()
    api = Classifier(
        args,
        max_batch_size=args.max_batch_size,
        batch_timeout=BATCH_TIMEOUT_S,
        api_path="/predict",
    )
    # ZeroMQ between the HTTP server and the worker, as LitServe advises above 100 requests/s;
    # one worker, as this server has one model copy with one stream (LitServe's docs suggest a
    # worker per core on CPU: each would be a second model copy); no access log, as the others
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=True)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")
