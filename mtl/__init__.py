"""mtl-onnx: multi-task text classifiers trained in PyTorch, served with ONNX Runtime."""

__version__ = "0.1.0"
