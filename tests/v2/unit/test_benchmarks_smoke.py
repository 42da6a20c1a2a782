"""The benchmark suite runs end to end on tiny inputs and reports every figure it documents."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.v2.conftest import PREDICTION_EXTRA

REPO_ROOT = Path(__file__).resolve().parents[3]
TINY = {"init_filters": 4, "num_groups": 4, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}


@pytest.mark.slow
def test_run_all_reports_every_benchmark(
    vesselnn_dir: Path,
    prepared_synthetic,
    tiny_adapter,
    tracking: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    sys.modules.pop("benchmarks", None)
    from benchmarks.report import render
    from benchmarks.run_all import Settings, collect

    settings = Settings(
        depths=(30,),
        inference_repeats=(1,),
        roi=(32, 32, 8),
        crop=64,
        train_steps=2,
        train_warmup=1,
        patch_size=(32, 32, 8),
        model_params=TINY,
        loader_epochs=2,
        step_repeats=1,
        matmul_size=64,
        serving_repeats=1,
        serving_clients=2,
        equal_time_minutes=0.05,
    )
    import torch

    dataset_dir = prepared_synthetic.out
    model = tiny_adapter.save_checkpoint(tmp_path / "tiny.pt", extra=PREDICTION_EXTRA)
    threads = torch.get_num_threads()
    try:  # collect() uses every core; later tests in this worker expect the worker's count
        report = collect(
            vesselnn_dir,
            model,
            tmp_path,
            settings,
            dataset=(dataset_dir, dataset_dir / "splits.json"),
        )
    finally:
        torch.set_num_threads(threads)

    assert set(report["matmul_peak_gflops"]) == {"fp32", "bf16"}
    assert "tiny.pt" in report["model"]
    (deep,) = report["inference"]
    assert deep["shape"] == [64, 64, 30]
    assert deep["reflected_along_z"]
    for row in report["inference"]:
        assert 0.0 <= row["argmax_agreement"] <= 1.0
        assert 0.0 <= row["agreement_same_blending"] <= 1.0
        assert row["project-fp32"]["precision"] == "fp32"
        assert row["onnx"]["provider"] == "cpu"
        assert row["onnx-openvino"]["provider"] == "openvino"  # uv overlaid its build
        assert row["onnx-openvino"]["precision"] == row["project"]["precision"]
        for path in ("baseline", "project", "project-fp32", "onnx", "onnx-openvino"):
            figures = row[path]
            assert figures["seconds"]["n"] == 1
            assert figures["seconds"]["min"] > 0
            assert figures["windows"] > 0
            assert figures["peak_rss_mb"] > 0
            assert figures["fraction_of_matmul_peak"] > 0

    served = report["serving"]
    assert served["shape"] == [64, 64, 25]  # the real volume's corner, all its slices
    assert served["in_process_s"]["n"] == served["rest_s"]["n"] == 1
    assert served["rest_s"]["min"] > 0
    assert served["in_process_s"]["min"] > 0
    assert served["rest_overhead"] == pytest.approx(
        served["rest_s"]["median"] / served["in_process_s"]["median"] - 1
    )
    assert served["concurrent"]["requests"] == 4
    assert served["concurrent"]["latency_s"]["n"] == 4

    train = report["training"]
    assert train["steps"] == 2
    assert train["patches_per_step"] == 2
    for loop in ("baseline", "project"):
        assert train[loop]["patches_per_s"] > 0
        assert train[loop]["step_seconds"]["n"] == 2
    assert train["baseline"]["precision"] == "fp32"
    equal = train["equal_time"]
    for loop in ("baseline", "project"):
        assert equal[loop]["steps"] > 0
        assert equal[loop]["seconds"] >= 3.0  # each loop trained for the whole budget
        assert 0.0 <= equal[loop]["dice"] <= 1.0
        assert set(equal[loop]["per_volume"]) == set(equal["project"]["per_volume"])
    assert equal["dice_difference"] == pytest.approx(
        equal["project"]["dice"] - equal["baseline"]["dice"]
    )

    loaders = report["data_pipeline"]["loaders"]
    assert set(loaders) == {"memory", "none"}
    assert all(len(r["epochs"]) == 2 and r["epochs"][0]["samples"] > 0 for r in loaders.values())

    page = render(report)
    titles = ("## Machine", "## Targets", "## Inference", "## Serving", "## Training throughput")
    for title in titles:
        assert title in page
    assert "| project-fp32 | fp32 |" in page
    assert "with the OpenVINO build" in page
    assert "| REST, 1 client |" in page
    assert "Dice at equal wall time (0.05 min of training each" in page

    from benchmarks.tracking import EXPERIMENT, log_report
    from mlflow import MlflowClient

    from minivess.tracking.query import query_runs

    uri = tracking
    run_id = log_report(report, page, uri)
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["inference.64x64x30.project.speedup"] == deep["project"]["speedup"]
    assert run.data.metrics["training.equal_time.project.dice"] == equal["project"]["dice"]
    assert run.data.params["roi"] == "[32, 32, 8]"
    assert run.data.tags["git_commit"]
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run_id)}
    assert artifacts == {"benchmarks.md", "report.json"}
    assert MlflowClient(uri).get_experiment(run.info.experiment_id).name == EXPERIMENT
    rows = query_runs(
        "select run_id, inference_64x64x30_project_speedup as speedup from runs", EXPERIMENT
    )
    assert rows.to_dict("records") == [{"run_id": run_id, "speedup": deep["project"]["speedup"]}]


def test_an_unreachable_tracking_server_is_named_in_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    sys.modules.pop("benchmarks", None)
    from benchmarks.tracking import log_report

    from minivess.errors import MinivessError

    with pytest.raises(MinivessError, match=r"127\.0\.0\.1:9"):
        log_report({"training": {"ratio": 1.0}}, "# page", "http://127.0.0.1:9")


def test_baselines_run_monais_own_segresnet_with_the_adapters_weights(
    tiny_adapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from torch import nn

    from minivess.adapters.layers import ChannelsLastUpsample

    monkeypatch.syspath_prepend(str(REPO_ROOT))
    sys.modules.pop("benchmarks", None)
    from benchmarks.common import monai_segresnet

    plain = monai_segresnet(tiny_adapter)
    ups = [m for m in plain.modules() if isinstance(m, nn.Upsample)]
    assert ups
    assert not any(isinstance(m, ChannelsLastUpsample) for m in ups)
    x = torch.randn(1, 1, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), tiny_adapter.network.eval()(x))


def test_a_rerun_keeps_the_sections_measured_by_other_scripts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    sys.modules.pop("benchmarks", None)
    from benchmarks.report import KEPT, kept_sections

    load_run = f"{KEPT}\n\n## Service under concurrent load\n\n| 1 | 200 | 0 |\n"
    previous = "# Benchmarks\n\n## Inference\n\nold figures\n\n" + load_run
    assert kept_sections(previous) == load_run
    assert kept_sections("# Benchmarks\n\nno marker\n") == ""
    page = (REPO_ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "## Service under concurrent load" in kept_sections(page)
