"""Execution providers: which ONNX Runtime providers to ask for, and their options.

Each provider's options are declared once, here, under the names ONNX Runtime gives them (see
onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html and
CUDA-ExecutionProvider.html). ``resolve_providers`` turns what a user asked for into the two
lists ``onnxruntime.InferenceSession(providers=..., provider_options=...)`` takes:

* ``"auto"``: every available provider of TensorRT, CUDA, CPU, in that order (TensorRT first,
  CUDA for the nodes TensorRT does not take, CPU for the rest).
* a name or a list of names, in priority order, matched forgivingly (``"trt"``, ``"tensorrt"``,
  ``"TensorrtExecutionProvider"``, ``"cuda"``, ``"CPU"``, any other ORT name). A name that this
  onnxruntime build does not offer is skipped when the list holds another provider that it
  does offer (``["cuda", "cpu"]`` falls back to CPU), and raises ProviderError otherwise.
* options as keyword arguments are routed by name to the selected provider(s) that know them
  (``trt_*`` to TensorRT, ``gpu_mem_limit`` to CUDA, ``device_id`` to every selected GPU
  provider); ``provider_options={"tensorrt": {...}}`` addresses one provider explicitly. An
  unknown name raises ProviderError with the known ones; option names of providers without a
  table here (OpenVINO, DirectML, ...) are handed to ONNX Runtime unchecked.

The TensorRT and CUDA entries follow ONNX Runtime's documentation; they are not exercised on a
GPU by rpdetect's test suite.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from ..errors import ProviderError

__all__ = [
    "AUTO_ORDER",
    "OptionSpec",
    "ProviderPlan",
    "ProviderSpec",
    "PROVIDERS",
    "canonical_provider",
    "resolve_providers",
]

_log = logging.getLogger("rpdetect.engine")

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
AUTO_ORDER: tuple[str, ...] = (TENSORRT, CUDA, CPU)


@dataclass(frozen=True)
class OptionSpec:
    """One provider option as ONNX Runtime names it. ``kind`` is "bool", "int", "str" or
    "choice" (one of ``choices``); ``default`` is ONNX Runtime's default, as documented."""

    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple[str, ...] = ()

    def to_ort(self, value: Any, provider: str) -> str:
        """The string ONNX Runtime parses for ``value``; ProviderError if it has the wrong type."""
        where = f"provider option {self.name!r} of {provider}"
        if self.kind == "bool":
            if isinstance(value, bool) or value in (0, 1):
                return "1" if value else "0"
            if isinstance(value, str) and value.lower() in ("0", "1", "true", "false"):
                return "1" if value.lower() in ("1", "true") else "0"
            raise ProviderError(f"{where}: expected a bool (True/False or 1/0), got {value!r}")
        if self.kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return value.strip()
            raise ProviderError(f"{where}: expected an integer, got {value!r}")
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise ProviderError(f"{where}: expected one of {list(self.choices)}, got {value!r}")
        if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
            return str(value if not isinstance(value, bytes) else value.decode())
        raise ProviderError(f"{where}: expected a string, got {type(value).__name__} {value!r}")


def _table(*specs: OptionSpec) -> Mapping[str, OptionSpec]:
    return MappingProxyType({s.name: s for s in specs})


@dataclass(frozen=True)
class ProviderSpec:
    name: str  # ONNX Runtime's name
    short: str  # the forgiving name: "tensorrt", "cuda", "cpu"
    aliases: tuple[str, ...]
    gpu: bool
    options: Mapping[str, OptionSpec] = field(default_factory=lambda: MappingProxyType({}))


_B, _I, _S, _C = "bool", "int", "str", "choice"

_TENSORRT_OPTIONS = _table(
    OptionSpec("device_id", _I, 0, "CUDA device id"),
    OptionSpec("trt_max_workspace_size", _I, None,
               "bytes TensorRT may use as workspace (ORT default: the device's total memory)"),
    OptionSpec("trt_max_partition_iterations", _I, 1000, "max iterations of graph partitioning"),
    OptionSpec("trt_min_subgraph_size", _I, 1, "smallest subgraph given to TensorRT"),
    OptionSpec("trt_fp16_enable", _B, False, "build FP16 engines (if the GPU supports it)"),
    OptionSpec("trt_bf16_enable", _B, False, "build BF16 engines (newer ORT/TensorRT)"),
    OptionSpec("trt_int8_enable", _B, False, "build INT8 engines (needs a calibration table)"),
    OptionSpec("trt_int8_calibration_table_name", _S, "", "INT8 calibration table file name"),
    OptionSpec("trt_int8_use_native_calibration_table", _B, False,
               "use a TensorRT-generated (native) calibration table"),
    OptionSpec("trt_dla_enable", _B, False, "run on the DLA (Jetson/Drive)"),
    OptionSpec("trt_dla_core", _I, 0, "DLA core to use"),
    OptionSpec("trt_dump_subgraphs", _B, False, "write the TensorRT subgraphs as ONNX files"),
    OptionSpec("trt_engine_cache_enable", _B, False, "cache built engines on disk"),
    OptionSpec("trt_engine_cache_path", _S, "", "folder of the engine cache"),
    OptionSpec("trt_engine_cache_prefix", _S, "", "file name prefix of cached engines"),
    OptionSpec("trt_engine_decryption_enable", _B, False, "decrypt cached engines"),
    OptionSpec("trt_engine_decryption_lib_path", _S, "", "library that decrypts cached engines"),
    OptionSpec("trt_force_sequential_engine_build", _B, False, "build engines one at a time"),
    OptionSpec("trt_context_memory_sharing_enable", _B, False,
               "share execution-context memory between subgraphs"),
    OptionSpec("trt_layer_norm_fp32_fallback", _B, False, "keep LayerNorm in FP32 under FP16"),
    OptionSpec("trt_timing_cache_enable", _B, False, "cache layer timings on disk"),
    OptionSpec("trt_timing_cache_path", _S, "", "folder of the timing cache"),
    OptionSpec("trt_force_timing_cache", _B, False, "use a timing cache from another GPU model"),
    OptionSpec("trt_detailed_build_log", _B, False, "log engine build details"),
    OptionSpec("trt_build_heuristics_enable", _B, False, "faster builds by tactic heuristics"),
    OptionSpec("trt_sparsity_enable", _B, False, "allow sparse-weight tactics"),
    OptionSpec("trt_builder_optimization_level", _I, 3,
               "0 (fast build) .. 5 (slow build, fastest engine)"),
    OptionSpec("trt_auxiliary_streams", _I, -1, "auxiliary streams per engine (-1: heuristic)"),
    OptionSpec("trt_tactic_sources", _S, "", 'tactic sources, e.g. "-CUDNN,+CUBLAS"'),
    OptionSpec("trt_extra_plugin_lib_paths", _S, "", "plugin libraries, ';'-separated"),
    OptionSpec("trt_profile_min_shapes", _S, "", "explicit min shapes of dynamic inputs"),
    OptionSpec("trt_profile_max_shapes", _S, "", "explicit max shapes of dynamic inputs"),
    OptionSpec("trt_profile_opt_shapes", _S, "", "explicit optimal shapes of dynamic inputs"),
    OptionSpec("trt_cuda_graph_enable", _B, False, "capture the run in a CUDA graph"),
    OptionSpec("trt_dump_ep_context_model", _B, False, "write an EP-context model (precompiled)"),
    OptionSpec("trt_ep_context_file_path", _S, "", "where the EP-context model goes"),
    OptionSpec("trt_ep_context_embed_mode", _I, 0, "0: engine path in the model, 1: engine inside"),
    OptionSpec("trt_weight_stripped_engine_enable", _B, False, "build weight-stripped engines"),
    OptionSpec("trt_onnx_model_folder_path", _S, "", "folder of the ONNX model (weight refit)"),
    OptionSpec("trt_engine_hw_compatible", _B, False, "engines portable across Ampere+ GPUs"),
    OptionSpec("trt_op_types_to_exclude", _S, "", "op types kept off TensorRT, ','-separated"),
)

_CUDA_OPTIONS = _table(
    OptionSpec("device_id", _I, 0, "CUDA device id"),
    OptionSpec("gpu_mem_limit", _I, None, "bytes the memory arena may grow to (ORT: no limit)"),
    OptionSpec("arena_extend_strategy", _C, "kNextPowerOfTwo", "how the memory arena grows",
               ("kNextPowerOfTwo", "kSameAsRequested")),
    OptionSpec("cudnn_conv_algo_search", _C, "EXHAUSTIVE", "cuDNN convolution algorithm search",
               ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")),
    OptionSpec("do_copy_in_default_stream", _B, True, "copy on the compute stream"),
    OptionSpec("cudnn_conv_use_max_workspace", _B, True, "let cuDNN use its largest workspace"),
    OptionSpec("cudnn_conv1d_pad_to_nc1d", _B, False, "pad 1-D convolutions as [N, C, 1, D]"),
    OptionSpec("enable_cuda_graph", _B, False, "capture the run in a CUDA graph"),
    OptionSpec("enable_skip_layer_norm_strict_mode", _B, False, "SkipLayerNorm in strict mode"),
    OptionSpec("use_tf32", _B, True, "allow TF32 math on Ampere+ GPUs"),
    OptionSpec("prefer_nhwc", _B, False, "prefer NHWC kernels"),
    OptionSpec("use_ep_level_unified_stream", _B, False, "one stream for the whole EP"),
    OptionSpec("tunable_op_enable", _B, False, "use TunableOp kernels"),
    OptionSpec("tunable_op_tuning_enable", _B, False, "let TunableOp tune online"),
    OptionSpec("tunable_op_max_tuning_duration_ms", _I, 0, "tuning time limit per op (0: none)"),
    OptionSpec("fuse_conv_bias", _B, False, "fuse Conv + bias with cuDNN frontend"),
    OptionSpec("sdpa_kernel", _I, 0, "attention kernel choice (bit flags)"),
)

PROVIDERS: Mapping[str, ProviderSpec] = MappingProxyType({
    TENSORRT: ProviderSpec(TENSORRT, "tensorrt", ("tensorrt", "trt"), True, _TENSORRT_OPTIONS),
    CUDA: ProviderSpec(CUDA, "cuda", ("cuda", "gpu"), True, _CUDA_OPTIONS),
    # CPU: no provider options; its thread count is a session option (Detector ``threads``).
    CPU: ProviderSpec(CPU, "cpu", ("cpu",), False),
})

_SUFFIX = "executionprovider"


def _key(name: str) -> str:
    key = name.strip().lower().replace("-", "").replace("_", "")
    return key[: -len(_SUFFIX)] if key.endswith(_SUFFIX) and key != _SUFFIX else key


def canonical_provider(name: str, available: Sequence[str]) -> str:
    """ONNX Runtime's name for ``name`` (``"trt"`` -> ``"TensorrtExecutionProvider"``), whether
    available or not; ProviderError for a name neither rpdetect nor this onnxruntime knows."""
    if not isinstance(name, str) or not name.strip():
        raise ProviderError(f"provider name: expected a non-empty string, got {name!r}")
    key = _key(name)
    for spec in PROVIDERS.values():
        if key in spec.aliases or key == _key(spec.name):
            return spec.name
    for ort_name in available:
        if key == _key(ort_name):
            return ort_name
    raise ProviderError(
        f"unknown execution provider {name!r}; available in this onnxruntime: {list(available)} "
        f"(short names: {[s.short for s in PROVIDERS.values()]})"
    )


@dataclass(frozen=True)
class ProviderPlan:
    """What to hand to ``onnxruntime.InferenceSession``: ``names`` (priority order) and one
    options dict per name, values as the strings ONNX Runtime parses."""

    names: tuple[str, ...]
    options: tuple[dict[str, str], ...]
    requested: tuple[str, ...]  # as the user said it, ("auto",) for auto
    skipped: tuple[str, ...] = ()  # requested but unavailable, fallen back from
    unused_options: tuple[str, ...] = ()  # auto only: options of providers not available

    def session_kwargs(self) -> dict[str, Any]:
        return {"providers": list(self.names), "provider_options": [dict(o) for o in self.options]}


def _select(
    requested: str | Sequence[str], available: Sequence[str]
) -> tuple[list[str], list[str], bool]:
    """(chosen, skipped, auto) for what the user asked; ProviderError if nothing is left."""
    if isinstance(requested, str) and _key(requested) == "auto":
        chosen = [p for p in AUTO_ORDER if p in available]
        if not chosen:
            raise ProviderError(
                f"providers='auto': none of {list(AUTO_ORDER)} is available; this onnxruntime "
                f"offers {list(available)}: name one of them"
            )
        return chosen, [], True
    names = [requested] if isinstance(requested, str) else list(requested)
    if not names:
        raise ProviderError("providers: empty list; give 'auto' or provider names such as ['cpu']")
    canonical: list[str] = []
    for name in names:
        c = canonical_provider(name, available)
        if c not in canonical:
            canonical.append(c)
    chosen = [c for c in canonical if c in available]
    skipped = [c for c in canonical if c not in available]
    if not chosen:
        hint = ""
        if any(PROVIDERS.get(s, PROVIDERS[CPU]).gpu for s in skipped):
            hint = (" (GPU providers need onnxruntime-gpu instead of onnxruntime: "
                    "pip uninstall onnxruntime && pip install 'rpdetect[gpu]')")
        raise ProviderError(
            f"execution provider(s) {skipped} not available in this onnxruntime; available: "
            f"{list(available)}{hint}"
        )
    return chosen, skipped, False


def _known_names(specs: Sequence[ProviderSpec]) -> list[str]:
    return sorted({o for s in specs for o in s.options})


def resolve_providers(
    requested: str | Sequence[str] = "auto",
    *,
    available: Sequence[str],
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    options: Mapping[str, Any] | None = None,
) -> ProviderPlan:
    """Providers and their options for an InferenceSession.

    ``options``: flat ``name=value`` pairs routed to every selected provider that knows the name.
    ``provider_options``: ``{provider: {name: value}}`` for one provider explicitly.
    """
    chosen, skipped, auto = _select(requested, available)
    per: dict[str, dict[str, str]] = {name: {} for name in chosen}
    unused: list[str] = []

    for name, value in (options or {}).items():
        owners = [s for s in PROVIDERS.values() if name in s.options]
        if not owners:
            raise ProviderError(
                f"unknown provider option {name!r}; known options: TensorRT "
                f"{_known_names([PROVIDERS[TENSORRT]])}, CUDA {_known_names([PROVIDERS[CUDA]])} "
                f"(options of other providers go in provider_options={{'<provider>': {{...}}}})"
            )
        targets = [s for s in owners if s.name in per]
        if not targets:
            owner_names = [s.name for s in owners]
            if auto:
                unused.append(name)
                _log.warning("provider option %r ignored: %s not available (providers: %s)",
                             name, " / ".join(owner_names), chosen)
                continue
            raise ProviderError(
                f"provider option {name!r} belongs to {owner_names}, which providers={chosen} "
                f"does not include; add it to providers or drop the option"
            )
        for spec in targets:
            per[spec.name][name] = spec.options[name].to_ort(value, spec.name)

    for prov_name, opts in (provider_options or {}).items():
        target = canonical_provider(prov_name, available)
        if target not in per:
            if auto and target in PROVIDERS:
                unused.extend(opts)
                _log.warning("provider_options for %s ignored: not available (providers: %s)",
                             target, chosen)
                continue
            raise ProviderError(
                f"provider_options[{prov_name!r}]: {target} is not among the selected providers "
                f"{chosen}"
            )
        spec = PROVIDERS.get(target)
        for name, value in opts.items():
            if spec is None:  # a provider rpdetect has no table for: ORT checks its options
                per[target][str(name)] = str(value)
                continue
            if name not in spec.options:
                known = sorted(spec.options)
                raise ProviderError(
                    f"provider_options[{prov_name!r}]: {target} has no option {name!r}; known: "
                    + (str(known) if known else "none (set threads= for the CPU thread count)")
                )
            per[target][name] = spec.options[name].to_ort(value, target)

    return ProviderPlan(
        names=tuple(chosen),
        options=tuple(per[name] for name in chosen),
        requested=("auto",) if auto else tuple(
            [requested] if isinstance(requested, str) else list(requested)),
        skipped=tuple(skipped),
        unused_options=tuple(unused),
    )
