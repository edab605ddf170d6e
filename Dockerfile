# Two images from one file.
#
#   gpu (the default, last stage): CUDA, PyTorch, onnxruntime-gpu and the project; `docker run` trains the quickstart.
#     docker build -t mtl_transformer .
#     docker run --gpus all mtl_transformer
#
#   cpu (edge): a slim Python with the runtime only (onnxruntime, tokenizers, numpy, typer, rich; no torch); its
#   entrypoint is `mtl-onnx`, and it predicts from an export folder mounted at /model.
#     docker build --target cpu -t mtl-onnx-cpu .
#     docker run --rm -v "$PWD/export:/model:ro" mtl-onnx-cpu predict /model "Stocks rallied after the rate cut."
#
# tests/test_docker_cpu_image.py repeats the cpu stage's install in a fresh venv and predicts with it, and checks
# the stage names, order and entrypoint below.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- cpu-build: the runtime installed into a venv, so the cpu image gets no build tools or sources ----------------
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mtl ./mtl
# The base install only: `.` without extras. Its versions are the ranges in pyproject.toml (no lock file yet).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir .

# ---- cpu: edge runtime ------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=cpu-build /opt/venv /opt/venv
# An unprivileged user, by number so that Kubernetes' runAsNonRoot can check it.
RUN useradd --create-home --uid 10001 --user-group mtl
USER 10001:10001
WORKDIR /home/mtl
ENTRYPOINT ["mtl-onnx"]
CMD ["--help"]

# ---- gpu: training, export and CUDA inference (default target) --------------------------------------------------
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS gpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# Ubuntu's python3 (3.12) is what the CUDA base image is tested with; the versions come with the pinned base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mtl ./mtl

# The README's install steps (torch pinned first, then the project); then onnxruntime-gpu replaces the CPU
# onnxruntime: both ship the same `onnxruntime` module, so the CPU wheel goes first and the GPU wheel is
# reinstalled whole. The other versions are the ranges in pyproject.toml.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir torch==2.13.0 \
    && /opt/venv/bin/pip install --no-cache-dir -e ".[train,gpu]" \
    && /opt/venv/bin/pip uninstall -y onnxruntime \
    && /opt/venv/bin/pip install --no-cache-dir --force-reinstall --no-deps "onnxruntime-gpu>=1.20"
ENV PATH=/opt/venv/bin:$PATH

CMD ["mtl-onnx", "quickstart"]
