"""The Dockerfile's images: its stages are where the README says (the gpu stage on the same Python base, one CUDA
from the wheels, checked at build); the cpu (edge) image's install step (`pip install .`, no extras, in a fresh
venv) gives an `mtl-onnx` that predicts from an export folder with no torch anywhere in that environment; and where
a Docker daemon and the base image are here, the cpu image built with the README's command predicts N lines for N
in, without torch, as uid 10001. The gpu image is not built here (gigabytes of CUDA wheels)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factory import TASKS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# What the cpu-build stage copies into the image; the test builds from a copy of exactly these.
IMAGE_SOURCES = ("pyproject.toml", "README.md", "mtl")


def _stages() -> list[tuple[str, list[str]]]:
    """(stage name, its instructions as lines) in Dockerfile order, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[tuple[str, list[str]]] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if match:
            stages.append((match.group(1), []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def test_dockerfile_targets():
    stages = dict(_stages())
    assert [name for name, _ in _stages()][-1] == "gpu"  # the default target: `docker build .` is the GPU image
    assert {"cpu-build", "cpu", "gpu"} <= set(stages)
    build = " ".join(stages["cpu-build"])
    assert re.search(r"pip install (--no-cache-dir )?\.(\s|$)", build), "the cpu image installs `.` with no extras"
    assert "torch" not in build and "torch" not in " ".join(stages["cpu"])
    for source in IMAGE_SOURCES:
        assert source in build
    assert 'ENTRYPOINT ["mtl-onnx"]' in stages["cpu"]
    assert 'CMD ["mtl-onnx", "quickstart"]' in stages["gpu"]
    gpu = " ".join(stages["gpu"])
    # one CUDA, the wheels': torch and onnxruntime-gpu pinned exactly, the provider's libraries checked at build
    assert "torch==2.13.0" in gpu and re.search(r"onnxruntime-gpu==\d+\.\d+\.\d+ ", gpu)
    assert "python -m mtl.runtime.cuda" in gpu
    bases = dict((name, base) for base, name in re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", DOCKERFILE.read_text(),
                                                           re.MULTILINE))
    assert bases["gpu"] == bases["cpu"] == "${PYTHON_IMAGE}"  # no CUDA base image with a CUDA of its own
    for stage in ("cpu", "gpu"):
        assert "USER 10001:10001" in stages[stage]
    assert 'VOLUME ["/home/mtl/runs"]' in stages["gpu"] and "WORKDIR /home/mtl" in stages["gpu"]


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(command: list, env: dict, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cpu_image_install_predicts_without_torch(tiny):
    """What `docker build --target cpu` does (a fresh venv, `pip install .`) and what `docker run ... predict
    /model TEXT` then runs, here with a copy of the sources so the repository gets no build/ folder. About 30 s
    on 2 cores with pip's cache warm."""
    export = tiny.export("bert")  # built with torch in this process; the venv below never sees torch
    work = tiny.scratch("cpu-image")
    source = work / "src"
    source.mkdir()
    for name in IMAGE_SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, source / name)
    venv = work / "venv"
    env = _clean_env(venv)
    _run([sys.executable, "-m", "venv", venv], env, 120, work).check_returncode()
    install = _run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "."], env, 600, source)
    assert install.returncode == 0, install.stderr[-3000:]

    result = _run([venv / "bin" / "mtl-onnx", "predict", export, "the movie was great", "stocks rally"], env, 120,
                  work)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["the movie was great", "stocks rally"]
    for row in rows:
        assert set(row["predictions"]) == set(TASKS)
        for task, labels in TASKS.items():
            assert row["predictions"][task]["label"] in labels

    probe = ("import importlib.util as u, json; "
             "print(json.dumps({m: u.find_spec(m) is not None for m in ('torch', 'transformers', 'onnxruntime', "
             "'tokenizers', 'mtl')}))")
    found = json.loads(_run([venv / "bin" / "python", "-c", probe], env, 60, work).stdout)
    assert found == {"torch": False, "transformers": False, "onnxruntime": True, "tokenizers": True, "mtl": True}
    # The package came from the copy, installed like the image's, not an editable link to this checkout.
    location = _run([venv / "bin" / "python", "-c", "import mtl; print(mtl.__file__)"], env, 60, work).stdout
    assert str(venv) in location


def _docker_missing(base: str) -> str | None:
    """Why the image cannot be built here, or None: no docker client, no daemon answering, or no base image (it
    is never pulled: build a stand-in with ../shared/tools/docker-standin where no registry is reachable)."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
            return "no Docker daemon answers (`docker info` fails)"
        if subprocess.run(["docker", "image", "inspect", base], capture_output=True, timeout=30).returncode != 0:
            return f"the base image {base} is not here (make it with ../shared/tools/docker-standin {base})"
    except subprocess.TimeoutExpired:
        return "the Docker daemon does not answer within 30 s"
    return None


def _docker(*args, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.mark.slow
def test_cpu_image_built_with_the_readme_command_predicts_as_uid_10001(tiny):
    """`docker build --target cpu -t mtl-onnx-cpu .`, then `docker run` on a mounted export: N lines in, N out,
    no torch in the image, uid 10001. About a minute on 2 cores (pip downloads inside the build)."""
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE).group(1)
    reason = _docker_missing(base)
    if reason:
        pytest.skip(reason)
    export = tiny.export("bert")
    built = _docker("build", "--target", "cpu", "-t", "mtl-onnx-cpu", ".", timeout=900)
    assert built.returncode == 0, (built.stdout + built.stderr)[-3000:]

    texts = [f"stocks rally on day {i}" if i % 2 else f"the team won game {i}" for i in range(40)]
    run = _docker("run", "--rm", "-i", "-v", f"{export}:/model:ro", "mtl-onnx-cpu", "predict", "/model", "--file",
                  "-", stdin="".join(f"{text}\n" for text in texts))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [row["text"] for row in rows] == texts
    assert all(row["predictions"][task]["label"] in labels for row in rows for task, labels in TASKS.items())
    assert "running on CPUExecutionProvider: " in run.stderr

    probe = "import importlib.util as u; print([m for m in ('torch', 'transformers') if u.find_spec(m)])"
    found = _docker("run", "--rm", "--entrypoint", "python", "mtl-onnx-cpu", "-c", probe)
    assert (found.returncode, found.stdout.strip()) == (0, "[]"), found.stderr
    whoami = _docker("run", "--rm", "--entrypoint", "id", "mtl-onnx-cpu")
    assert whoami.stdout.startswith("uid=10001(mtl) gid=10001(mtl)"), whoami.stdout + whoami.stderr
