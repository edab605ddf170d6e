# Two images from one file, both on the same Python base and both running as uid 10001 (not root).
#
#   gpu (the default, last stage): PyTorch, onnxruntime-gpu and the project; `docker run` runs the quickstart
#   (train, export, bench) on the GPU when one is passed in, else on the CPU, and says which in one line. Results go
#   to the volume /home/mtl/runs.
#     docker build -t mtl_transformer .
#     docker run --rm --gpus all -v mtl-runs:/home/mtl/runs mtl_transformer
#
#   cpu (edge): a slim Python with the runtime only (onnxruntime, tokenizers, numpy, typer, rich; no torch); its
#   entrypoint is `mtl-onnx`, and it predicts from an export folder mounted at /model.
#     docker build --target cpu -t mtl-onnx-cpu .
#     docker run --rm -v "$PWD/export:/model:ro" mtl-onnx-cpu predict /model "Stocks rallied after the rate cut."
#
# tests/cli/test_cpu_image.py checks the stages below, repeats the cpu stage's install in a fresh venv and predicts
# with it, and (where a Docker daemon and the base image are here) builds the cpu image with the command above and
# runs it. The gpu image is not built by tests or CI (gigabytes of CUDA wheels).

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
# One CUDA major, and it comes with the wheels: torch 2.13.0 from PyPI is a CUDA 13.0 build whose nvidia-* wheels
# hold the CUDA 13 libraries, and onnxruntime-gpu 1.31.1 is built for CUDA 13 (1.26 and older: CUDA 12). A CUDA base
# image would only add a second, unused CUDA. The NVIDIA driver (R580 or newer for CUDA 13) is the host's, mounted
# by `docker run --gpus`. mtl.runtime.cuda loads the wheels' libraries for ONNX Runtime (onnxruntime.preload_dlls).
FROM ${PYTHON_IMAGE} AS gpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
# The dependencies first, in a layer of their own (gigabytes) that a change to the sources does not rebuild: torch
# pinned, then the base and `train` requirements as pyproject.toml lists them (tomllib: Python 3.11+), then
# onnxruntime-gpu pinned in place of the CPU onnxruntime: both ship the same `onnxruntime` module, so the CPU one is
# removed first. --no-deps: its CUDA libraries are torch's (the same CUDA 13), its Python dependencies are there.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir torch==2.13.0 \
    && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['train']))" > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
    && /opt/venv/bin/pip uninstall -y onnxruntime \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps onnxruntime-gpu==1.31.1
COPY README.md ./
COPY mtl ./mtl
# The project itself; then the build fails unless ONNX Runtime's CUDA provider library resolves every library it
# needs, from the wheels, as the runtime loads them (no GPU needed: see mtl/runtime/cuda.py).
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/python -m mtl.runtime.cuda \
    && rm -rf /src
ENV PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 10001 --user-group mtl \
    && mkdir /home/mtl/runs && chown 10001:10001 /home/mtl/runs
USER 10001:10001
WORKDIR /home/mtl
# The quickstart writes runs/quickstart here: a named volume keeps it, and takes this folder's owner (uid 10001).
VOLUME ["/home/mtl/runs"]
CMD ["mtl-onnx", "quickstart"]
