"""The latency benchmark end to end on tiny models (quick mode), and its parts. No test here
asserts a time: only that every figure is there and well-formed."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import onnx
import pytest

from rpdetect.bench import (
    QUICK, Case, CaseOutcome, SessionSettings, Targets, TorchModel, plan_variants, run_benchmark,
    summarise,
)
from rpdetect.bench.cases import ROLES
from rpdetect.bench.profile import GROUPS, group_of, node_times
from rpdetect.bench.providers import DEFAULT_VARIANTS, ProviderVariant, SkippedVariant
from rpdetect.bench.report import Ratio, compute_ratios, throughput
from rpdetect.bench.stats import median_interval
from rpdetect.bench.runner import WorkerProcess
from rpdetect.bench.worker import Worker
from rpdetect.cli import main
from rpdetect.errors import ProviderError
from rpdetect.export.graph import DetectorConfig, build_detector, save_onnx
from rpdetect.testing import plain_classifier

CPU_ONLY = ["CPUExecutionProvider"]
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
STAT_KEYS = {"runs", "median_ms", "p90_ms", "p99_ms", "min_ms", "mean_ms", "images_per_s"}


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    det = build_detector(plain_classifier(size=16), DetectorConfig(kappas=(0.01, 0.05, 0.1)))
    onnx.checker.check_model(det, full_check=True)
    return save_onnx(det, tmp_path_factory.mktemp("bench") / "tiny.onnx")


@pytest.fixture(scope="module")
def tiny_int8_detector(tmp_path_factory):
    import numpy as np

    from rpdetect.export.quantize import build_int8_detector

    images = np.random.default_rng(0).random((6, 3, 16, 16), dtype=np.float32)
    det = build_int8_detector(plain_classifier(size=16), DetectorConfig(kappas=(0.01, 0.05, 0.1)),
                              images)
    return save_onnx(det, tmp_path_factory.mktemp("bench") / "tiny_int8.onnx")


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tiny_detector, tiny_int8_detector, tmp_path):
    report = run_benchmark(
        tiny_detector,
        int8_detector=tiny_int8_detector,
        torch_model=TorchModel("rpdetect.testing:tiny_torch_cnn", (3, 16, 16)),
        providers=DEFAULT_VARIANTS,
        batches=(2,),
        settings=SessionSettings(threads=1),
        timing=QUICK,
        profile_runs=2,
        targets=Targets(detector_over_floor=1.05, naive_over_detector=5.0, int8_over_floor=0.5),
        title="tiny",
        floor_twin=True,
    )
    js, md = report.write(tmp_path / "out", "tiny")
    data = json.loads(js.read_text())
    assert data["schema"] == "rpdetect.bench.latency/1"
    for key in ("cpu_model", "logical_cores", "onnxruntime", "torch", "date_utc",
                "load_average_at_end"):
        assert key in data["machine"], key
    assert data["model"]["n"] == 3 and data["model"]["input_shape"] == [3, 16, 16]

    cases = {(c["provider"], c["role"], c["batch"]): c for c in data["cases"]}
    for role in ROLES:  # every configuration ran on the CPU ...
        case = cases[("cpu", role, 1)]
        assert case["status"] == "ok", case
        assert set(case["stats"]) == STAT_KEYS
        assert case["stats"]["runs"] >= QUICK.rounds * QUICK.min_runs
        assert all(math.isfinite(v) and v > 0 for v in case["stats"].values())
        assert len(case["round_medians_ms"]) == QUICK.rounds
        assert case["peak_rss_mib"] > 0 and case["threads"] == 1
    for role in ("detector-graph", "detector", "detector-input", "detector-int8",
                 "detector-graph-int8", "detector-input-int8"):  # every B, every mode
        assert cases[("cpu", role, 2)]["inner_batch"] == 2 * 4, role
        assert cases[("cpu", role, 2)]["status"] == "ok", role
    assert cases[("cpu", "floor", 1)]["inner_batch"] == 4
    assert cases[("cpu", "floor-twin", 1)]["inner_batch"] == 4
    for provider in ("cuda", "tensorrt", "tensorrt-fp16"):  # ... and is skipped elsewhere
        on_it = [c for c in data["cases"] if c["provider"] == provider]
        assert {c["role"] for c in on_it} >= set(ROLES) - {"naive", "torch-batch"}
        assert all(c["status"] == "skipped" and "onnxruntime-gpu" in c["reason"] for c in on_it)

    ratios = {r["name"]: r for r in data["ratios"] if r["provider"] == "cpu"}
    assert set(ratios) == {"detector (rpdetect.Detector, default) / floor",
                           "INT8 detector (rpdetect.Detector) / floor",
                           "INT8 detector graph noise / floor", "INT8 floor / floor",
                           "INT8 detector (rpdetect.Detector) / INT8 floor",
                           "detector / floor", "detector (input noise) / floor",
                           "detector (input noise, prefetched) / floor",
                           "naive / detector", "naive / detector (input noise)",
                           "torch batch / detector", "floor / classifier B=1",
                           "naive / floor (upper bound of naive / detector)",
                           "detector / floor (profiled kernels)",
                           "floor's A/A twin / floor (the measurement's own noise)"}
    for r in ratios.values():
        assert r["value"] > 0
        assert len(r["per_round"]) == (0 if "profiled" in r["name"] else QUICK.rounds)
    assert ratios["detector / floor"]["target"] == 1.05
    assert ratios["detector (rpdetect.Detector, default) / floor"]["target"] == 1.05
    int8 = ratios["INT8 detector (rpdetect.Detector) / floor"]
    assert int8["target"] == 0.5 and int8["target_kind"] == "max"
    tp = {(t["noise"], t["precision"]): t for t in data["throughput"] if t["provider"] == "cpu"}
    assert set(tp) == {(m, p) for m in ("graph", "input", "engine") for p in ("fp32", "int8")}
    for t in tp.values():
        assert set(t["images_per_s"]) == {"1", "2"} and t["per_image_cost_top_b_over_b1"] > 0
    assert ratios["naive / detector"]["target_kind"] == "min"
    assert ratios["detector (input noise, prefetched) / floor"]["target"] == 1.05
    bound = ratios["naive / floor (upper bound of naive / detector)"]
    assert bound["target"] is None
    assert bound["value"] == pytest.approx(
        ratios["naive / detector"]["value"] * ratios["detector / floor"]["value"], rel=1e-9)
    assert isinstance(ratios["naive / detector"]["meets"], bool)
    assert ratios["naive / detector (input noise)"]["value"] == pytest.approx(
        ratios["naive / detector"]["value"] * ratios["detector / floor"]["value"]
        / ratios["detector (input noise) / floor"]["value"], rel=1e-9)

    prof = data["profile"]
    assert set(prof["groups_ms"]) == set(GROUPS)
    assert prof["groups_ms"]["noise"] > 0 and prof["groups_ms"]["classifier"] > 0
    assert abs(sum(prof["groups_share"].values()) - 1) < 1e-6
    floor = data["profile_floor"]  # the classifier alone: nothing of rpdetect's in it
    assert floor["groups_ms"]["classifier"] == floor["kernel_ms"] > 0

    text = md.read_text()
    assert text == report.to_markdown()
    for needle in ("| cpu | detector / floor |", "| cpu | naive / detector |",
                   "| detector graph noise B=2 [cpu] |", "Skipped providers",
                   "- tensorrt-fp16: TensorrtExecutionProvider is not in",
                   "| noise |", "| scores |", "The floor, profiled in alternation",
                   "## Throughput", "| cpu | engine | int8 |"):
        assert needle in text, needle


def test_cli_in_process_writes_json_and_markdown(tiny_detector, tmp_path, capsys):
    out = tmp_path / "res"
    code = main(["bench", str(tiny_detector), "--quick", "--in-process", "--providers", "cpu",
                 "--batches", "1", "--no-profile", "--threads", "1", "--out", str(out),
                 "--stem", "t"])
    assert code == 0
    data = json.loads((out / "t.json").read_text())
    assert {c["role"] for c in data["cases"]} == {"classifier-b1", "floor", "detector-graph",
                                                  "detector-input", "detector-input-prefetch",
                                                  "detector"}
    assert all(c["status"] == "ok" for c in data["cases"])
    assert data["profile"] is None and data["settings"]["isolate"] is False
    assert "| cpu | detector / floor |" in capsys.readouterr().out
    assert (out / "t.md").read_text().startswith("# Latency: tiny.onnx")


def test_cli_errors_name_the_problem(tiny_detector, tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx: no such detector file" in capsys.readouterr().err
    assert main(["bench", str(tiny_detector), "--providers", "tpu"]) == 2
    assert "unknown provider variant 'tpu'" in capsys.readouterr().err
    assert main(["bench", str(tiny_detector), "--mean", "0.5"]) == 2
    assert "give --torch too" in capsys.readouterr().err


def test_gpu_variants_are_skipped_with_the_reason_when_absent():
    plan = plan_variants(["cpu", "CUDA", "trt", "tensorrt-fp16"], available=CPU_ONLY)
    assert isinstance(plan[0], ProviderVariant) and plan[0].providers == ("CPUExecutionProvider",)
    assert [type(v) for v in plan[1:]] == [SkippedVariant] * 3
    assert [v.name for v in plan] == ["cpu", "cuda", "tensorrt", "tensorrt-fp16"]
    for v in plan[1:]:
        assert "not in onnxruntime.get_available_providers()" in v.reason
        assert "pip install 'rpdetect[gpu]'" in v.reason


def test_gpu_variants_resolve_when_present():
    plan = {v.name: v for v in plan_variants(DEFAULT_VARIANTS, available=GPU_BUILD)}
    assert all(isinstance(v, ProviderVariant) for v in plan.values())
    assert plan["cuda"].providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert plan["tensorrt"].primary == "TensorrtExecutionProvider"
    assert plan["tensorrt"].provider_options[0]["trt_fp16_enable"] == "0"
    assert plan["tensorrt-fp16"].provider_options[0]["trt_fp16_enable"] == "1"
    with pytest.raises(ProviderError, match="unknown provider variant 'tpu'.*known"):
        plan_variants(["tpu"], available=GPU_BUILD)


def test_worker_skips_a_provider_the_session_did_not_start(tiny_detector):
    # This onnxruntime has no CUDA: the session falls back to the CPU, which must not be
    # reported as a CUDA number.
    reply = Worker().handle({"op": "setup", "workload": {
        "kind": "onnx", "model": str(tiny_detector), "threads": 1, "batch": 1,
        "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "provider_options": [{}, {}]}})
    if reply.get("ok"):
        pytest.skip("this onnxruntime starts CUDA")
    assert reply["skip"] is True and "did not start CUDAExecutionProvider" in reply["error"]


def test_a_worker_that_does_not_answer_is_killed_and_named(tiny_detector):
    worker = WorkerProcess("slow one", timeout_s=60)
    try:
        reply = worker.request({"op": "setup", "workload": {
            "kind": "onnx", "model": str(tiny_detector), "threads": 1, "batch": 1,
            "providers": ["CPUExecutionProvider"], "provider_options": [{}]}})
        assert reply["ok"] is True
        worker.timeout_s = 0.5
        reply = worker.request({"op": "run", "min_time_s": 30, "min_runs": 1})
        assert reply["ok"] is False
        assert "worker for 'slow one' gave no answer to 'run' within 0.5 s" in reply["error"]
    finally:
        worker.close()


def test_summarise_and_ratios():
    st = summarise([0.004, 0.001, 0.002, 0.003, 0.005], images_per_run=4)
    assert (st.runs, st.median_ms, st.min_ms) == (5, 3.0, 1.0)
    assert st.p90_ms == pytest.approx(4.6) and st.images_per_s == pytest.approx(4 / 0.003)
    with pytest.raises(ValueError, match="no timed runs"):
        summarise([], images_per_run=1)

    def outcome(role, rounds):
        case = Case(role, role, "cpu", 1, 11, 1, {})
        return CaseOutcome(case, times_s=[t for r in rounds for t in r], round_times_s=rounds)

    floor = outcome("floor", [[1.0, 1.0], [2.0, 2.0]])
    det = outcome("detector-graph", [[1.1, 1.1], [2.0, 2.0]])
    (r,) = compute_ratios([floor, det], Targets(detector_over_floor=1.03))
    assert r.name == "detector / floor" and r.value == pytest.approx(1.55 / 1.5)
    assert r.per_round == pytest.approx([1.1, 1.0]) and r.meets is False
    assert r.interval_vs_target is None  # two rounds: no interval


def test_per_round_interval_against_the_target():
    lo, hi = median_interval([1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06])
    assert 1.0 <= lo < 1.03 < hi <= 1.06
    assert np.isnan(median_interval([1.0, 2.0])[0])

    def ratio(per_round, target=1.05, kind="max"):
        return Ratio("r", "cpu", "a", "b", float(np.median(per_round)), per_round, target, kind)

    assert ratio([1.00, 1.01, 1.02, 1.01, 1.00]).interval_vs_target == "meets"
    assert ratio([1.08, 1.09, 1.10, 1.07, 1.08]).interval_vs_target == "misses"
    assert ratio([0.95, 1.00, 1.05, 1.10, 1.15]).interval_vs_target == "spans"
    assert ratio([2.1, 2.2, 2.3], 2.0, "min").interval_vs_target == "meets"


def test_throughput_cost_ratio_is_paired_per_round():
    def outcome(role, batch, rounds):
        case = Case(f"{role} B={batch}", role, "cpu", batch, 11 * batch, batch, {})
        return CaseOutcome(case, times_s=[t for r in rounds for t in r], round_times_s=rounds)

    # a slow second round hits both B alike: per round, B = 4 costs 0.9 of B = 1 per image
    b1 = outcome("detector-graph", 1, [[1.0], [2.0], [1.0]])
    b4 = outcome("detector-graph", 4, [[3.6], [7.2], [3.6]])
    (row,) = throughput([b1, b4])
    assert row["per_round_cost_ratio"] == pytest.approx([0.9, 0.9, 0.9])
    assert row["per_round_cost_ratio_median"] == pytest.approx(0.9)
    # sustained: images / total time, slow calls included (a median of B = 1's calls would
    # leave out its slow one, which B = 4's single long call cannot)
    b1 = outcome("detector-graph", 1, [[1.0, 1.0, 1.0, 5.0]])
    b4 = outcome("detector-graph", 4, [[8.0]])
    (row,) = throughput([b1, b4])
    assert row["images_per_s"] == {"1": pytest.approx(4 / 8.0), "4": pytest.approx(4 / 8.0)}
    assert row["per_image_cost_top_b_over_b1"] == pytest.approx(1.0)


def test_profile_groups_follow_rpdetect_node_names():
    assert group_of("rpdetect/noise_node") == "noise"
    assert group_of("rpdetect/noise_uniform_node_2") == "noise"
    assert group_of("rpdetect/scaled_noise_node") == "noise"
    assert group_of("rpdetect/stacked_node") == "input"
    assert group_of("rpdetect/normalised_node") == "normalisation"
    assert group_of("rpdetect/score2_node") == "scores"
    assert group_of("rpdetect/z_noisy_node/GatherSliceToSplitFusion") == "scores"
    assert group_of("rpdetect/noisy_node/SomeFusion") == "noise"
    assert group_of("/features/conv/Conv") == "classifier"


def test_node_times_are_medians_without_the_first_run():
    def node(name, op, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "dur": dur, "args": {"op_name": op}}

    trace = [{"cat": "Session", "name": "model_run", "dur": 900}, node("a", "Conv", 500),
             node("b", "Add", 70), {"cat": "Node", "name": "a_fence_before", "dur": 1}]
    for dur in (10, 30, 20):
        trace += [{"cat": "Session", "name": "model_run", "dur": 10 * dur},
                  node("a", "Conv", dur), node("b", "Add", 7)]
    nodes, run_us = node_times(trace)
    assert nodes == {"a": {"op": "Conv", "us": 20.0}, "b": {"op": "Add", "us": 7.0}}
    assert run_us == 200.0
    assert node_times([node("c", "Mul", 3)]) == ({"c": {"op": "Mul", "us": 3.0}}, 0.0)


def test_gap_is_idle_time_outside_the_timed_runs():
    from rpdetect.bench.worker import Worker

    worker = Worker()
    worker.run = lambda: None  # a no-op "run": only the gap can take time
    t0 = time.perf_counter()
    reply = worker.handle({"op": "run", "min_time_s": 0.0, "min_runs": 3, "gap_s": 0.05})
    elapsed = time.perf_counter() - t0
    assert reply["ok"] and len(reply["times_s"]) == 3
    assert elapsed >= 3 * 0.05  # the worker slept after every run ...
    assert max(reply["times_s"]) < 0.05  # ... and none of it was timed


def test_cli_gap_ms_is_recorded(tiny_detector, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["bench", str(tiny_detector), "--quick", "--in-process", "--providers", "cpu",
                 "--batches", "1", "--no-profile", "--threads", "1", "--gap-ms", "5",
                 "--out", str(out), "--stem", "g"]) == 0
    data = json.loads((out / "g.json").read_text())
    assert data["settings"]["timing"]["gap_s"] == 0.005
    assert "5 ms idle after every timed run (paced)" in (out / "g.md").read_text()
    assert main(["bench", str(tiny_detector), "--gap-ms", "-1"]) == 2
    assert "--gap-ms: expected >= 0" in capsys.readouterr().err


def test_floor_run_and_timed_median_ms(tmp_path):
    from rpdetect.bench.worker import floor_run, timed_median_ms

    path = tmp_path / "clf.onnx"
    onnx.save(plain_classifier(size=16), str(path))
    run = floor_run(path, 11)
    logits = run()[0]
    assert logits.shape[0] == 11 and np.isfinite(logits).all()
    calls = []
    got = timed_median_ms(lambda: calls.append(time.perf_counter()), 0.0, min_runs=7, warmup=2)
    assert got["calls"] == 7 and len(calls) == 9 and got["ms"] >= 0.0


def test_restart_every_gives_every_configuration_fresh_workers(tiny_detector, monkeypatch):
    from dataclasses import replace

    from rpdetect.bench import runner
    from rpdetect.bench.cases import OnnxWorkload
    from rpdetect.bench.runner import Timing

    made: list[str] = []

    class Counting(runner.InProcessWorker):
        def __init__(self, label: str) -> None:
            super().__init__(label)
            made.append(label)

    monkeypatch.setattr(runner, "InProcessWorker", Counting)
    w = OnnxWorkload(str(tiny_detector), ("CPUExecutionProvider",), ({},), 1,
                     SessionSettings(threads=1))
    cases = [Case("a", "detector-graph", "cpu", 1, 4, 1, w),
             Case("b", "detector-graph", "cpu", 1, 4, 1, w)]
    out = runner.run_cases(cases, timing=replace(QUICK, rounds=5, restart_every=2),
                           isolate=False)
    assert made == ["a", "b"] * 3  # at the start, before round 3 and before round 5
    assert all(o.status == "ok" and len(o.round_times_s) == 5 for o in out)
    made.clear()
    runner.run_cases(cases, timing=replace(QUICK, rounds=5), isolate=False)
    assert made == ["a", "b"]  # by default one worker each for the whole run
    with pytest.raises(ValueError, match="restart_every"):
        Timing(restart_every=-1)


def test_every_worker_is_warmed_up_twice_before_its_timed_rounds(tiny_detector, monkeypatch):
    """ONNX Runtime allocates its memory pattern on a session's second run: two warm-up runs
    keep that run out of the timed rounds, for every fresh worker too."""
    from dataclasses import replace

    from rpdetect.bench import runner
    from rpdetect.bench.cases import OnnxWorkload

    runs: list[tuple[str, int]] = []  # (worker, runs made by that request)

    class Counting(runner.InProcessWorker):
        def request(self, message):
            reply = super().request(message)
            if message["op"] == "run":
                runs.append((self.label, len(reply["times_s"])))
            return reply

    monkeypatch.setattr(runner, "InProcessWorker", Counting)
    w = OnnxWorkload(str(tiny_detector), ("CPUExecutionProvider",), ({},), 1,
                     SessionSettings(threads=1))
    timing = replace(runner.Timing(), rounds=3, round_time_s=0.0, warmup_time_s=0.0,
                     restart_every=2)
    assert timing.warmup_runs >= 2
    runner.run_cases([Case("a", "detector-graph", "cpu", 1, 4, 1, w)], timing=timing,
                     isolate=False)
    # warm-up, rounds 1-2, a fresh worker's warm-up, round 3
    assert [n for _, n in runs] == [timing.warmup_runs, 1, 1, timing.warmup_runs, 1]


@pytest.mark.parametrize("prefetch", [0, 1])
def test_the_noise_input_is_fresh_every_run_in_place_unless_prefetched(prefetch):
    from rpdetect.bench.cases import OnnxWorkload
    from rpdetect.bench.worker import _ort_run

    class Arg:
        def __init__(self, name, shape):
            self.name, self.shape, self.type = name, shape, "tensor(float)"

    fed: list[np.ndarray] = []

    class Session:  # records the noise array each run is fed, and a copy of its values
        def get_inputs(self):
            return [Arg("image", [1, 3, 4, 4]), Arg("noise", [1, 5, 3, 4, 4])]

        def run(self, outputs, feed):
            fed.append((feed["noise"], feed["noise"].copy()))

    w = OnnxWorkload("unused.onnx", ("CPUExecutionProvider",), ({},), 1,
                     SessionSettings(threads=1), fresh_normal=("noise",), prefetch=prefetch)
    run = _ort_run(w, Session())
    for _ in range(3):
        run()
    arrays, values = zip(*fed)
    assert all(v.shape == (1, 5, 3, 4, 4) and v.dtype == np.float32 for v in values)
    assert not np.array_equal(values[0], values[1]) and not np.array_equal(values[1], values[2])
    # one buffer refilled in place (no new memory per run), or fresh arrays when prefetched
    assert (len({id(a) for a in arrays}) == 1) == (prefetch == 0)


def test_fresh_process_rounds_starts_a_process_per_configuration_and_round(tmp_path):
    from rpdetect.bench.worker import fresh_process_rounds

    script = tmp_path / "w.py"
    script.write_text("import json, sys\n"
                      "c = json.loads(sys.argv[2])\n"
                      "print('noise from a library')\n"
                      "print(json.dumps({'ms': c['value']}))\n")
    ms = fresh_process_rounds(script, {"a": {"value": 1.0}, "b": {"value": 2.0}}, rounds=3,
                              round_time_s=0.0, rotate=True)
    assert ms == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
