"""Provider selection and option routing. The GPU providers cannot run here: their availability is
monkeypatched and sessions are either not built or built on CPU by a recording stand-in."""

from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort
import pytest

from rpdetect import Detector
from rpdetect.engine.providers import PROVIDERS, canonical_provider, resolve_providers
from rpdetect.errors import ProviderError

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
ALL = [TRT, CUDA, CPU, "AzureExecutionProvider"]


@pytest.mark.parametrize(
    "available, expected",
    [
        (ALL, (TRT, CUDA, CPU)),
        ([CUDA, CPU], (CUDA, CPU)),
        ([CPU, "AzureExecutionProvider"], (CPU,)),
        ([CPU, TRT], (TRT, CPU)),  # order comes from rpdetect, not from ORT's list
    ],
)
def test_auto_prefers_tensorrt_then_cuda_then_cpu(available, expected):
    plan = resolve_providers("auto", available=available)
    assert plan.names == expected
    assert plan.options == tuple({} for _ in expected)
    assert plan.requested == ("auto",)


@pytest.mark.parametrize(
    "name, expected",
    [("cpu", CPU), ("CPU", CPU), ("CPUExecutionProvider", CPU), ("cuda", CUDA), ("CUDA", CUDA),
     ("trt", TRT), ("tensorrt", TRT), ("TensorRT", TRT), ("TensorrtExecutionProvider", TRT),
     ("azure", "AzureExecutionProvider")],
)
def test_provider_names_are_matched_forgivingly(name, expected):
    assert canonical_provider(name, ALL) == expected


def test_unknown_provider_name_lists_the_available_ones():
    with pytest.raises(ProviderError, match="unknown execution provider 'cdua'") as err:
        resolve_providers(["cdua"], available=[CPU])
    assert CPU in str(err.value)


@pytest.mark.parametrize("requested", ["cuda", ["tensorrt"], ["trt", "cuda"]])
def test_explicit_unavailable_provider_raises_listing_available(requested):
    with pytest.raises(ProviderError, match="not available") as err:
        resolve_providers(requested, available=[CPU, "AzureExecutionProvider"])
    assert CPU in str(err.value) and "onnxruntime-gpu" in str(err.value)


def test_explicit_list_falls_back_only_where_it_says_so():
    plan = resolve_providers(["cuda", "cpu"], available=[CPU])
    assert plan.names == (CPU,) and plan.skipped == (CUDA,)
    plan = resolve_providers(["tensorrt", "cuda"], available=[CUDA, CPU])
    assert plan.names == (CUDA,) and plan.skipped == (TRT,)
    with pytest.raises(ProviderError):
        resolve_providers(["cuda"], available=[CPU])


def test_keyword_options_are_routed_to_the_providers_that_know_them():
    plan = resolve_providers(
        "auto",
        available=ALL,
        options={"device_id": 1, "trt_fp16_enable": True, "trt_engine_cache_path": Path("/c"),
                 "gpu_mem_limit": 2 << 30, "cudnn_conv_algo_search": "HEURISTIC"},
    )
    trt, cuda, cpu = plan.options
    assert trt == {"device_id": "1", "trt_fp16_enable": "1", "trt_engine_cache_path": "/c"}
    assert cuda == {"device_id": "1", "gpu_mem_limit": str(2 << 30),
                    "cudnn_conv_algo_search": "HEURISTIC"}
    assert cpu == {}
    assert plan.session_kwargs() == {"providers": [TRT, CUDA, CPU],
                                     "provider_options": [trt, cuda, cpu]}


def test_explicit_provider_options_reach_only_that_provider():
    plan = resolve_providers(
        ["trt", "cuda"], available=ALL,
        provider_options={"tensorrt": {"trt_engine_cache_enable": "true", "device_id": 0},
                          "CUDAExecutionProvider": {"arena_extend_strategy": "kSameAsRequested"}},
    )
    assert plan.names == (TRT, CUDA)
    assert plan.options == ({"trt_engine_cache_enable": "1", "device_id": "0"},
                            {"arena_extend_strategy": "kSameAsRequested"})


def test_unknown_option_name_is_an_error_listing_the_known_ones():
    with pytest.raises(ProviderError, match="unknown provider option 'trt_fp16'") as err:
        resolve_providers("auto", available=ALL, options={"trt_fp16": True})
    assert "trt_fp16_enable" in str(err.value) and "gpu_mem_limit" in str(err.value)
    with pytest.raises(ProviderError, match="has no option 'gpu_mem_limit'"):
        resolve_providers("auto", available=ALL, provider_options={"trt": {"gpu_mem_limit": 1}})
    with pytest.raises(ProviderError, match="threads="):
        resolve_providers("cpu", available=ALL, provider_options={"cpu": {"use_arena": 0}})


@pytest.mark.parametrize(
    "name, value, message",
    [("trt_fp16_enable", "yes", "expected a bool"), ("device_id", "one", "expected an integer"),
     ("device_id", True, "expected an integer"), ("trt_engine_cache_path", 3, "expected a string"),
     ("cudnn_conv_algo_search", "FAST", "expected one of")],
)
def test_option_values_are_type_checked(name, value, message):
    with pytest.raises(ProviderError, match=message):
        resolve_providers("auto", available=ALL, options={name: value})


def test_option_of_a_provider_not_selected(caplog):
    with pytest.raises(ProviderError, match="does not include"):
        resolve_providers(["cuda"], available=ALL, options={"trt_fp16_enable": True})
    with caplog.at_level(logging.WARNING, logger="rpdetect.engine"):
        plan = resolve_providers("auto", available=[CPU], options={"trt_fp16_enable": True})
    assert plan.names == (CPU,) and plan.unused_options == ("trt_fp16_enable",)
    assert "trt_fp16_enable" in caplog.text and "ignored" in caplog.text


def test_option_tables_have_onnx_runtime_names():
    trt, cuda = PROVIDERS[TRT].options, PROVIDERS[CUDA].options
    for name in ("device_id", "trt_fp16_enable", "trt_int8_enable", "trt_engine_cache_enable",
                 "trt_engine_cache_path", "trt_timing_cache_enable", "trt_max_workspace_size",
                 "trt_builder_optimization_level"):
        assert name in trt
    for name in ("device_id", "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search",
                 "do_copy_in_default_stream", "use_tf32"):
        assert name in cuda
    assert all(spec.doc for table in (trt, cuda) for spec in table.values())


class RecordingSession:
    """Stands in for ort.InferenceSession: records what the Detector asks for, runs on CPU."""

    calls: list[dict] = []

    def __init__(self, path, sess_options=None, providers=None, provider_options=None):
        RecordingSession.calls.append({"providers": providers, "provider_options": provider_options,
                                       "threads": sess_options.intra_op_num_threads,
                                       "log_severity_level": sess_options.log_severity_level})
        self._real = REAL_SESSION(path, sess_options, providers=[CPU])

    def __getattr__(self, name):
        return getattr(self._real, name)


REAL_SESSION = ort.InferenceSession


@pytest.fixture
def gpu_machine(monkeypatch):
    """Pretend onnxruntime-gpu with TensorRT is installed; sessions still run on CPU."""
    RecordingSession.calls = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(ALL))
    monkeypatch.setattr(ort, "InferenceSession", RecordingSession)
    return RecordingSession.calls


def test_detector_hands_the_plan_to_onnx_runtime(gpu_machine, det_input, caplog):
    with caplog.at_level(logging.WARNING, logger="rpdetect.engine"):
        det = Detector(det_input, threads=2, trt_fp16_enable=True, device_id=0,
                       provider_options={"cuda": {"gpu_mem_limit": 1 << 30}})
    (call,) = gpu_machine
    assert call["providers"] == [TRT, CUDA, CPU]
    assert call["provider_options"] == [{"trt_fp16_enable": "1", "device_id": "0"},
                                        {"device_id": "0", "gpu_mem_limit": str(1 << 30)}, {}]
    assert call["threads"] == 2 and call["log_severity_level"] == 3
    # the stand-in only runs CPU: the Detector says what the session really uses
    assert det.providers == (CPU,)
    assert "TensorrtExecutionProvider was requested but ONNX Runtime did not start" in caplog.text


def test_explicit_gpu_request_that_onnx_runtime_drops_is_an_error(gpu_machine, det_input):
    with pytest.raises(ProviderError, match="did not start CUDAExecutionProvider"):
        Detector(det_input, providers=["cuda"])


def test_real_cpu_session(det_input):
    det = Detector(det_input, providers="CPU", threads=1)
    assert det.providers == (CPU,)
    assert det.plan.requested == ("CPU",)


def test_unknown_keyword_is_not_silently_ignored(det_input):
    with pytest.raises(ProviderError, match="unknown provider option 'chanel_order'"):
        Detector(det_input, chanel_order="bgr")
