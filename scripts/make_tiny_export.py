"""A tiny random BERT checkpoint and its export (fp32 + int8), for memory and plumbing benchmarks that need no
real model:

    python scripts/make_tiny_export.py /tmp/tiny    # writes /tmp/tiny/ckpt and /tmp/tiny/onnx
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import make_model, save_tiny_backbone  # noqa: E402

from mtl.export import export_checkpoint  # noqa: E402
from mtl.export.options import ExportOptions  # noqa: E402


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    model, tokenizer = make_model(save_tiny_backbone("bert", root / "backbone"))
    model.save_pretrained(root / "ckpt", tokenizer)
    export_checkpoint(root / "ckpt", root / "onnx", ExportOptions(precisions=("fp32", "int8"), overwrite=True))
    print(root / "onnx")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
