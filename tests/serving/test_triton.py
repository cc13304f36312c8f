"""``rpdetect export-triton``: the repository layout, and a config.pbtxt that Triton's own schema
(tritonclient's model_config_pb2, protobuf text format) accepts and that says what the ONNX file
declares."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from rpdetect.cli import main
from rpdetect.errors import ModelError, OutputError
from rpdetect.serving.triton import write_repository

from .conftest import write_detector

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="needs tritonclient[grpc] (the serve extra) for Triton's config schema")
text_format = pytest.importorskip("google.protobuf.text_format")

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.UINT8: "TYPE_UINT8",
                  onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.BOOL: "TYPE_BOOL"}


@pytest.fixture(scope="module")
def detectors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("triton_models")
    return {
        "graph": write_detector(folder / "graph.onnx"),
        "input": write_detector(folder / "input.onnx", noise="input", batch=2),
        "bgr": write_detector(folder / "bgr.onnx", input_format="uint8-nhwc-bgr"),
    }


def _parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def _declared(value: onnx.ValueInfoProto) -> tuple[str, list[int]]:
    dims = [d.dim_value if d.HasField("dim_value") else -1
            for d in value.type.tensor_type.shape.dim]
    return ONNX_TO_TRITON[value.type.tensor_type.elem_type], dims


def _type_name(entry) -> str:
    return model_config_pb2.DataType.Name(entry.data_type)


@pytest.mark.parametrize("kind", ["graph", "input", "bgr"])
def test_config_parses_with_tritons_schema_and_matches_the_file(
        detectors: dict[str, Path], tmp_path: Path, kind: str) -> None:
    files = write_repository(detectors[kind], tmp_path / "repo")
    assert files.model == tmp_path / "repo" / kind / "1" / "model.onnx"
    assert files.config == tmp_path / "repo" / kind / "config.pbtxt"
    assert files.model.read_bytes() == detectors[kind].read_bytes()
    config = _parse(files.config)
    assert config.name == kind and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 0
    model = onnx.load(str(detectors[kind]))
    initializers = {i.name for i in model.graph.initializer}
    assert [i.name for i in config.input] == [v.name for v in model.graph.input]
    assert [o.name for o in config.output] == [v.name for v in model.graph.output]
    for entry, value in zip(config.input, model.graph.input):
        data_type, dims = _declared(value)
        assert _type_name(entry) == data_type, value.name
        assert entry.optional == (value.name in initializers), value.name
        if dims:
            assert list(entry.dims) == dims, value.name
            assert not entry.HasField("reshape")
        else:  # a 0-d tensor: Triton's dims [1] reshaped to []
            assert list(entry.dims) == [1] and entry.HasField("reshape")
            assert list(entry.reshape.shape) == []
    for entry, value in zip(config.output, model.graph.output):
        assert (_type_name(entry), list(entry.dims)) == _declared(value), value.name
    required = [i.name for i in config.input if not i.optional]
    assert required == (["image", "noise"] if kind == "input" else ["image"])
    assert {i.name for i in config.input if i.optional} == {"threshold1", "threshold2",
                                                             "threshold3"}
    image = next(i for i in config.input if i.name == "image")
    assert list(image.dims) == ([1, 32, 32, 3] if kind == "bgr"
                                else [2 if kind == "input" else 1, 3, 32, 32])
    (group,) = config.instance_group
    assert group.count == 1 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert not config.HasField("optimization")


@pytest.mark.parametrize("fp16", [False, True])
def test_tensorrt_accelerator_and_instances(detectors: dict[str, Path], tmp_path: Path,
                                            fp16: bool) -> None:
    files = write_repository(detectors["graph"], tmp_path, name="det-trt", instances=3,
                             accelerator="tensorrt", fp16=fp16)
    config = _parse(files.config)
    (group,) = config.instance_group
    assert group.count == 3 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == ("FP16" if fp16 else "FP32")
    assert not config.optimization.execution_accelerators.cpu_execution_accelerator


def test_cuda_is_gpu_instances_without_tensorrt(detectors: dict[str, Path],
                                                tmp_path: Path) -> None:
    config = _parse(write_repository(detectors["graph"], tmp_path, accelerator="cuda").config)
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert not config.HasField("optimization")


def test_cli_writes_the_repository_and_says_how_to_start_triton(
        detectors: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    repo = tmp_path / "models"
    assert main(["export-triton", str(detectors["input"]), "--repo", str(repo), "--name",
                 "rp", "--instances", "2"]) == 0
    out = capsys.readouterr().out
    assert f"tritonserver --model-repository={repo.resolve()}" in out
    config = _parse(repo / "rp" / "config.pbtxt")
    assert config.name == "rp" and config.instance_group[0].count == 2


@pytest.mark.parametrize("argv, message", [
    (["--fp16"], "fp16"),
    (["--name", "../up"], "model name"),
    (["--instances", "0"], "--instances"),
])
def test_cli_refuses_bad_options(detectors: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture, argv: list[str],
                                 message: str) -> None:
    try:
        code = main(["export-triton", str(detectors["graph"]), "--repo", str(tmp_path / "r"),
                     *argv])
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r" / "graph" / "config.pbtxt").exists()


def test_refuses_a_file_that_is_not_a_detector(tmp_path: Path) -> None:
    from rpdetect.testing import plain_classifier

    classifier = tmp_path / "classifier.onnx"
    onnx.save(plain_classifier(), str(classifier))
    with pytest.raises(ModelError, match="not an rpdetect detector"):
        write_repository(classifier, tmp_path / "repo")
    assert not (tmp_path / "repo" / "classifier").exists()


def test_a_failed_write_leaves_the_previous_repository_intact(
        detectors: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = write_repository(detectors["graph"], tmp_path, name="det")
    before = (first.model.read_bytes(), first.config.read_text())

    def full_disk(src: object, dst: object) -> None:
        Path(str(dst)).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", full_disk)
    with pytest.raises(OutputError, match="nothing was changed"):
        write_repository(detectors["input"], tmp_path, name="det", instances=4)
    assert (first.model.read_bytes(), first.config.read_text()) == before
    leftovers = [p.name for p in (tmp_path / "det").rglob(".rpdetect-*")]
    assert leftovers == []


def test_refuses_to_overwrite_its_own_input(detectors: dict[str, Path], tmp_path: Path) -> None:
    files = write_repository(detectors["graph"], tmp_path, name="same")
    with pytest.raises(OutputError, match="input file"):
        write_repository(files.model, tmp_path, name="same")


def test_cli_notes_other_versions_triton_would_serve_instead(
        detectors: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "graph" / "3").mkdir(parents=True)
    assert main(["export-triton", str(detectors["graph"]), "--repo", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "also holds version(s) 3" in err and "serves the highest" in err
    assert (tmp_path / "graph" / "1" / "model.onnx").is_file()
