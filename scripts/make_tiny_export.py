"""A tiny random BERT checkpoint and its export (fp32 + int8), built by the test suite's model factory, for memory
and plumbing benchmarks that need no real model. Run from the repository root (so `tests` imports):

    python -m scripts.make_tiny_export /tmp/tiny    # writes /tmp/tiny/ckpt and /tmp/tiny/onnx
"""

import sys
from pathlib import Path

from mtl.export import export_checkpoint
from mtl.export.options import ExportOptions
from tests.factory import make_model, save_tiny_backbone


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    model, tokenizer = make_model(save_tiny_backbone("bert", root / "backbone"))
    model.save_pretrained(root / "ckpt", tokenizer)
    export_checkpoint(root / "ckpt", root / "onnx", ExportOptions(precisions=("fp32", "int8"), overwrite=True))
    print(root / "onnx")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
