"""Latency and throughput of PyTorch against ONNX Runtime on the same model and the same inputs.

    from mtl.bench.plan import BenchOptions, plan_bench
    from mtl.bench.harness import run_bench, quick_bench
    from mtl.bench import report

Imports nothing heavy: each backend runs in a worker process (`mtl.bench.worker`) that imports only what it needs.
"""
