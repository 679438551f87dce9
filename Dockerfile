# CPU image of the CIFAR-10 classifier API. Build: docker build -t cifar10-api .
# It serves with OpenVINO (no TensorFlow, no training code); for the TensorFlow runtime install
# the "tensorflow" extra instead: pip install ".[tensorflow]" and CIFAR10_RUNTIME=tensorflow.
# The base is a build argument so that machines which cannot pull it can name a stand-in with
# `python` and `pip` on the PATH (deploy/podman_build.sh builds one from Debian's packages).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CIFAR10_MODEL_DIR=/app/models/cifar10-resnet50 \
    CIFAR10_HOST=0.0.0.0 \
    CIFAR10_PORT=8000

WORKDIR /app

# Dependencies first (cached while only code or model change), and the user it runs as.
COPY pyproject.toml README.md ./
COPY app/__init__.py app/__init__.py
RUN pip install .  && pip uninstall -y cifar10-resnet50-service \
    && useradd --create-home --uid 10001 appuser

# The model served by default (override with a volume on /app/models), then the code (the
# serving package only): a change of code leaves the model's layer as it was.
COPY models models
COPY app app
RUN pip install --no-deps .

USER appuser
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"CIFAR10_PORT\", \"8000\")}/health/ready', timeout=4)"

# One worker per container: each worker would load its own model and keep its own metrics.
CMD ["cifar10-serve"]
