"""The detector file's contract (rpdetect.contract), the session builder, the torch statement of
Eq. 5/6 and the demo's code path."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from rpdetect import contract
from rpdetect.contract import (
    METADATA_KEYS,
    NODE_GROUPS,
    OUTPUTS,
    DetectorConfig,
    Provenance,
    load,
    node_group,
    read_metadata,
    read_spec,
    save,
    with_thresholds,
)
from rpdetect.engine import Detector, ProviderNotStarted, SessionBuilder
from rpdetect.errors import ModelError
from rpdetect.export import build_detector
from rpdetect.reference import reference_scores
from rpdetect.testing import plain_classifier

KAPPAS = (0.01, 0.04, 0.07, 0.1)


@pytest.fixture(scope="module")
def detector_model() -> onnx.ModelProto:
    return build_detector(plain_classifier(size=16, classes=5),
                          DetectorConfig(kappas=KAPPAS, noise="input", mean=(0.5,), std=(0.25,),
                                         clip=True))


def test_the_engine_does_not_import_the_surgery_module() -> None:
    code = "import sys, rpdetect.engine; print('rpdetect.export.graph' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_metadata_key_export_writes_is_documented(detector_model) -> None:
    assert set(read_metadata(detector_model)) == set(METADATA_KEYS)


def test_every_added_node_carries_a_group(detector_model) -> None:
    added = [n.name for n in detector_model.graph.node if n.name.startswith(contract.NODE_PREFIX)]
    assert added and {name.split("/")[1] for name in added} <= set(NODE_GROUPS)
    groups = {node_group(name) for name in added}
    assert groups == {"input", "noise", "normalisation", "scores"}
    random_ops = [n for n in build_detector(plain_classifier(size=16, classes=5),
                                            DetectorConfig(kappas=KAPPAS)).graph.node
                  if n.op_type == "RandomNormalLike"]
    assert [node_group(n.name) for n in random_ops] == ["noise"]
    # files from before 0.3 named nodes without a group
    assert node_group("rpdetect/scaled_noise_node") == "noise"
    assert node_group("rpdetect/stacked_node") == "input"
    assert node_group("rpdetect/score2_node") == "scores"
    assert node_group("/features/conv/Conv") == "classifier"


def test_outputs_match_the_graph(detector_model) -> None:
    assert [o.name for o in detector_model.graph.output] == list(OUTPUTS)


def test_spec_round_trips_through_metadata_and_rebuilds_the_file(detector_model) -> None:
    spec = read_spec(detector_model)
    assert spec.kappas == KAPPAS and spec.noise == "input" and spec.clip
    assert spec.input_shape == (3, 16, 16) and spec.num_classes == 5 and spec.has_flips
    assert not spec.calibrated and spec.provenance.calibrated is False
    again = read_spec(build_detector(plain_classifier(size=16, classes=5), spec.config()))
    assert again.to_metadata() == spec.to_metadata()
    graph_b2 = spec.config(noise="graph", batch=2)
    assert (graph_b2.noise, graph_b2.batch, graph_b2.kappas) == ("graph", 2, KAPPAS)


def test_provenance_has_one_schema_and_reads_old_files(detector_model) -> None:
    prov = Provenance(calibrated=True, mode="combined", fpr=0.05, n_images=100, n_failed=0,
                      source="clean/")
    spec = read_spec(with_thresholds(detector_model, 1.0, 2.0, prov, threshold3=3))
    assert spec.provenance == prov and spec.thresholds_provenance["n_images"] == 100
    # evaluation files from before 0.3 said "images"; other writers' keys are kept
    old = Provenance.from_json({"calibrated": True, "images": 50, "tool": "x"})
    assert old.n_images == 50 and old.extra == {"tool": "x"} and old.to_json()["tool"] == "x"
    hand = read_spec(with_thresholds(detector_model, 1.0, 2.0))
    assert hand.provenance == Provenance.by_hand()
    with pytest.raises(ModelError, match="JSON object"):
        Provenance.from_json([1, 2])


def test_load_and_save(tmp_path: Path, detector_model) -> None:
    path = save(detector_model, tmp_path / "det.onnx")
    model, spec = load(path)
    assert spec == read_spec(detector_model) and len(model.graph.node) == len(
        detector_model.graph.node)
    classifier = tmp_path / "clf.onnx"
    onnx.save(plain_classifier(), str(classifier))
    with pytest.raises(ModelError, match="not an rpdetect detector.*rpdetect export"):
        load(classifier)
    (tmp_path / "junk.onnx").write_bytes(b"\x08junk")
    with pytest.raises(ModelError, match="junk.onnx: not a readable ONNX model"):
        load(tmp_path / "junk.onnx")
    # a failed save leaves the old file as it was
    before = path.read_bytes()
    with pytest.raises(Exception):
        save(detector_model, tmp_path / "missing-folder" / "det.onnx")
    assert path.read_bytes() == before


def test_session_builder_rules(tmp_path: Path, detector_model, caplog) -> None:
    path = save(detector_model, tmp_path / "det.onnx")
    built = SessionBuilder.cpu(threads=1).build(path)
    assert built.providers[0] == "CPUExecutionProvider"
    assert [i.name for i in built.session.get_inputs()][:2] == ["image", "noise"]
    with pytest.raises(ProviderNotStarted, match="did not start CUDAExecutionProvider"):
        SessionBuilder(providers=("cuda", "cpu")).build(path)
    with pytest.raises(ValueError, match="threads"):
        SessionBuilder(threads=0)
    with pytest.raises(ValueError, match="graph_optimization"):
        SessionBuilder(graph_optimization="max")  # type: ignore[arg-type]
    # the Detector opens its session with the builder it is given
    det = Detector(path, session_builder=SessionBuilder.cpu(threads=1))
    assert det.session_builder.threads == 1 and det.providers == ("CPUExecutionProvider",)
    with pytest.raises(ValueError, match="not both"):
        Detector(path, session_builder=SessionBuilder.cpu(), threads=2)


def test_torch_scores_equal_the_numpy_reference() -> None:
    torch = pytest.importorskip("torch")
    from rpdetect import reference_torch

    rng = np.random.default_rng(0)
    z_clean = rng.normal(0, 3, (4, 7))
    z_noisy = z_clean[:, None] + rng.normal(0, 1.5, (4, 6, 7))
    want = reference_scores(z_clean, z_noisy)
    got = reference_torch.scores(torch.tensor(z_clean), torch.tensor(z_noisy))
    # float64 on both sides: equal to rounding
    np.testing.assert_allclose(got.score1.numpy(), want.score1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.score2.numpy(), want.score2, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got.flipped.numpy(), want.flipped)
    np.testing.assert_array_equal(got.flips.numpy(), want.flips)
    np.testing.assert_array_equal(got.label.numpy(), want.label)
    np.testing.assert_allclose(got.score1_max.numpy(), want.score1_max, rtol=1e-12)
    # float32, as attacks run: within float32 rounding
    got32 = reference_torch.scores(torch.tensor(z_clean, dtype=torch.float32),
                                   torch.tensor(z_noisy, dtype=torch.float32))
    np.testing.assert_allclose(got32.score1.numpy(), want.score1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got32.score2.numpy(), want.score2, rtol=1e-5, atol=1e-6)
    # differentiable, and the soft flip count follows the hard one
    zc = torch.tensor(z_clean, requires_grad=True)
    zn = torch.tensor(z_noisy, requires_grad=True)
    total = (reference_torch.score1(zc, zn).sum() + reference_torch.score2(zc, zn).sum()
             + reference_torch.soft_flips(zc, zn, temperature=0.01).sum())
    total.backward()
    assert zc.grad is not None and torch.isfinite(zn.grad).all() and zn.grad.abs().sum() > 0
    soft = reference_torch.soft_flips(torch.tensor(z_clean), torch.tensor(z_noisy),
                                      temperature=1e-3).numpy()
    np.testing.assert_allclose(soft, want.flips, atol=1e-3)


def test_noisy_copies_match_the_numpy_reference() -> None:
    torch = pytest.importorskip("torch")
    from rpdetect import reference, reference_torch

    rng = np.random.default_rng(1)
    x = rng.random((2, 3, 4, 4))
    noise = rng.standard_normal((2, 4, 3, 4, 4))
    got = reference_torch.noisy_copies(torch.tensor(x), torch.tensor(noise),
                                       torch.tensor(KAPPAS, dtype=torch.float64), clip=True)
    for b in range(2):
        want = reference.noisy_copies(x[b], noise[b], np.array(KAPPAS), clip=True)
        np.testing.assert_allclose(got[b].numpy(), want, rtol=0, atol=1e-15)


def test_demo_code_path_keeps_each_result_on_its_own_file(tmp_path: Path, detector_model) -> None:
    from rpdetect.demo import detect_samples

    path = save(detector_model, tmp_path / "det.onnx")
    rng = np.random.default_rng(0)
    images = []
    for i, truth in enumerate((3, 1, 4, 0)):
        p = tmp_path / f"imagenet_{i:02d}_{truth}.png"
        if i == 1:
            p.write_bytes(b"not a png")  # unreadable, between good files
        else:
            cv2.imwrite(str(p), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        images.append(p)
    detector = Detector(path, providers="cpu")
    table, failures = detect_samples(detector, images)
    assert [f.source for f in failures] == [str(images[1])]
    rows = table.splitlines()[1:-1]
    assert [r.split()[0] for r in rows] == [images[i].name for i in (0, 2, 3)]
    for row, i in zip(rows, (0, 2, 3)):
        name, truth, label = row.split()[:3]
        assert int(truth) == int(images[i].stem.rsplit("_", 1)[1])
        assert int(label) == detector.detect(images[i]).label  # the label of that very file
    assert "3 readable samples" in table.splitlines()[-1] and "1 unreadable" in table


def test_metadata_keys_are_what_the_clients_read() -> None:
    root = Path(__file__).resolve().parent.parent / "clients"
    cpp = (root / "cpp" / "src" / "detector_file.cpp").read_text()
    for key in ("kappas", "input_shape", "input_format", "noise", "threshold1", "threshold2",
                "threshold3"):
        assert key in METADATA_KEYS and f'"{key}"' in cpp, key


def test_info_json_keeps_provenance(tmp_path: Path, detector_model, capsys) -> None:
    from rpdetect.cli import main

    path = save(with_thresholds(detector_model, 1.0, 2.0, Provenance(
        calibrated=True, n_images=7, source="mine", fpr=0.1, mode="paper")), tmp_path / "d.onnx")
    assert main(["info", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["thresholds_provenance"]["n_images"] == 7
    assert main(["info", str(path)]) == 0
    assert "calibrated   on 7 clean images from mine" in capsys.readouterr().out
    logging.getLogger("rpdetect").handlers.clear()
