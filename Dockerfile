# GPU image: CUDA, PyTorch, onnxruntime-gpu and the project; `docker run` trains the quickstart.
#   docker build -t mtl_transformer .
#   docker run --gpus all mtl_transformer
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mtl ./mtl

# The README's install steps; then onnxruntime-gpu replaces the CPU onnxruntime (both ship the same
# `onnxruntime` module, so the CPU wheel goes first and the GPU wheel is reinstalled whole).
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install torch==2.13.0 \
    && /opt/venv/bin/pip install -e ".[train,gpu]" \
    && /opt/venv/bin/pip uninstall -y onnxruntime \
    && /opt/venv/bin/pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.20"
ENV PATH=/opt/venv/bin:$PATH

CMD ["mtl-onnx", "quickstart"]
