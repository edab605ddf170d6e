"""The bench's records on their two wires: the JSON lines from worker to parent, and the report file, which must
read and write reports of the earlier format (tests/bench/data/report_before_records.json) without losing or renaming
anything."""

import json

import pytest

from mtl.bench.records import ColdStartRun, EngineInfo, Measurement, Report
from mtl.errors import BenchError
from tests.factory import earlier_report


def _through_json(data):
    return json.loads(json.dumps(data))


# Fields added since the earlier report was written: it reads them as None.
ADDED = {"settings": {"engine_speedup_baseline"}, "text": {"warmup_passes"}, "row": {"engine_speedup",
                                                                                   "engine_baseline"}}


def _without(data: dict, keys: set[str]) -> dict:
    assert all(data[key] is None for key in keys)
    return {key: value for key, value in data.items() if key not in keys}


def test_an_earlier_report_reads_and_writes_back_unchanged():
    """Nothing lost or renamed: what it wrote back is the earlier report, plus the new fields, empty."""
    earlier = earlier_report()
    report = Report.from_dict(earlier)
    written = _through_json(report.to_dict())
    written["rows"] = [_without(row, ADDED["row"]) for row in written["rows"]]
    written["settings"]["text"] = _without(written["settings"]["text"], ADDED["text"])
    written["settings"] = _without(written["settings"], ADDED["settings"])
    assert written == earlier
    # and the typed view says what the JSON said
    fastest = min((r for r in report.rows if r.measured.workload == "synthetic"), key=lambda r: r.summary.p50_s)
    raw = min((r for r in earlier["rows"] if r["workload"] == "synthetic"), key=lambda r: r["p50_s"])
    assert (fastest.backend.name, fastest.measured.mode, fastest.speedup) == (raw["backend"], raw["mode"],
                                                                               raw["speedup"])
    assert report.environment.cpu.usable_cores == earlier["environment"]["cpu"]["usable_cores"]
    assert report.settings.text.texts == earlier["settings"]["text"]["texts"]


def test_a_file_that_is_not_a_report_is_refused():
    with pytest.raises(BenchError, match="not an mtl-onnx bench report"):
        Report.from_dict({"format": "mtl-onnx/manifest"})


@pytest.mark.parametrize("record", [
    Measurement("synthetic", "fused", 8, 64, items_per_call=8, latencies_s=[0.01, 0.02], artifact_bytes=1000),
    Measurement("text", "per-task", 4, None, items_per_call=6, latencies_s=[0.5], artifact_bytes=1000,
                batch_shapes=[[4, 20], [2, 9]], padding="dynamic", padded_tokens=98),
    ColdStartRun(import_s=0.1, load_s=0.2, predict_s=0.05, peak_rss_bytes=None, modules={"torch": False}),
    EngineInfo("CPUExecutionProvider", {"onnxruntime": "1.32.0"}, offline_optimized=True),
])
def test_worker_records_cross_the_json_wire_intact(record):
    assert type(record).from_dict(_through_json(record.to_dict())) == record

