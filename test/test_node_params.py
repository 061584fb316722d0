"""The depth node's parameter rules (pure) and config/depth.yaml staying in step with them."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reflector_ros.ros.params import DEFAULTS, PARAMS, changed_startup_params, normalize, validate_params

REPO = Path(__file__).resolve().parent.parent


def test_defaults_are_valid() -> None:
    assert validate_params({}) == []
    assert validate_params(dict(DEFAULTS)) == []


def test_config_yaml_lists_every_parameter_with_its_default() -> None:
    doc = yaml.safe_load((REPO / "config" / "depth.yaml").read_text())
    nested = doc["/**/reflector_depth"]["ros__parameters"]
    # ROS flattens nested mappings with dots: scale_anchor: {mode: ...} is scale_anchor.mode
    params = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            params.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            params[key] = value
    assert sorted(params) == sorted(PARAMS)
    for key, value in params.items():
        assert value == DEFAULTS[key] and type(value) is type(DEFAULTS[key]), key
    assert validate_params(params) == []


def test_readme_table_documents_every_parameter_with_its_default() -> None:
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`") and cells[1].startswith("`"):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    for key, default in DEFAULTS.items():
        assert key in rows, f"README parameter table lacks {key}"
        shown = str(default).lower() if isinstance(default, bool) else '""' if default == "" else str(default)
        assert rows[key] == shown, (key, rows[key], shown)


@pytest.mark.parametrize("bad, needle", [
    ({"min_depth": 5.0, "max_depth": 5.0}, "min_depth (5.0) must be smaller than max_depth"),
    ({"min_depth": 12.0}, "must be smaller than max_depth"),
    ({"points_stride": 0}, "points_stride must be >= 1"),
    ({"points_stride": 2.5}, "points_stride must be an integer"),
    ({"backend": "cuda-magic"}, "backend 'cuda-magic' is not one of"),
    ({"precision": "fp8"}, "precision 'fp8'"),
    ({"output_scale": 0.0}, "output_scale must be in (0, 1]"),
    ({"output_scale": 1.5}, "output_scale must be in (0, 1]"),
    ({"input_qos": "fast"}, "input_qos 'fast'"),
    ({"output_qos": "sensor_data"}, "output_qos 'sensor_data'"),
    ({"depth_encoding": "8UC1"}, "depth_encoding '8UC1'"),
    ({"rectify": "maybe"}, "rectify 'maybe' is not one of: auto, true, false"),
    ({"rectify": 3}, "rectify '3' is not one of"),
    ({"depth_encoding": "16UC1", "max_depth": 80.0}, "does not fit 16UC1"),
    ({"min_confidence": 1.5}, "min_confidence must be in [0, 1]"),
    ({"points_min_confidence": -0.1}, "points_min_confidence must be in [0, 1]"),
    ({"points_min_range": 5.0, "points_max_range": 2.0}, "points_max_range (2.0) must be larger"),
    ({"fallback_fx": -1.0}, "fallback_fx must be >= 0"),
    ({"diagnostics_period": 0.0}, "diagnostics_period"),
    ({"max_depth": float("nan")}, "max_depth must be a finite number"),
    ({"publish_points": "yes"}, "publish_points must be true or false"),
    ({"num_threads": -2}, "num_threads must be >= 0"),
    ({"model": "/nonexistent/model.onnx"}, "does not exist"),
    ({"min_depth_typo": 1.0}, "unknown parameter 'min_depth_typo'"),
])
def test_invalid_values_are_named(bad: dict, needle: str) -> None:
    errors = validate_params(bad)
    assert any(needle in e for e in errors), errors


def test_type_and_value_errors_come_in_one_round() -> None:
    """A wrong type does not hide another parameter's bad value until the next start."""
    errors = validate_params({"points_stride": 2.5, "max_depth": "abc", "output_qos": "reliabel"})
    assert len(errors) == 3, errors
    assert any("points_stride must be an integer" in e for e in errors)
    assert any("max_depth must be a finite number" in e for e in errors)
    assert any("output_qos 'reliabel' is not one of" in e for e in errors)
    # a wrong type is not compared with another parameter under its default's name
    assert validate_params({"min_depth": "abc", "max_depth": 0.05}) == ["min_depth must be a finite number, got 'abc'"]
    assert validate_params({"scale_anchor.mode": "floor", "scale_anchor.camera_height": "1.2"}) == [
        "scale_anchor.camera_height must be a finite number, got '1.2'"]


def test_model_file_checks(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert any("is empty" in e for e in validate_params({"model": str(empty)}))
    wrong = tmp_path / "weights.bin"
    wrong.write_bytes(b"\0" * 32)
    assert any("expected one of" in e for e in validate_params({"model": str(wrong)}))
    assert any("is not a file" in e for e in validate_params({"model": str(tmp_path)}))
    ok = tmp_path / "m.onnx"
    ok.write_bytes(b"\x08\x07" * 16)   # content is the backend's business; the name and size are fine
    assert validate_params({"model": str(ok)}) == []
    assert validate_params({"model": "/nonexistent.onnx"}, check_files=False) == []


def test_all_errors_reported_at_once() -> None:
    errors = validate_params({"min_depth": 3.0, "max_depth": 1.0, "points_stride": 0, "backend": "x"})
    assert len(errors) == 3


def test_integers_accepted_for_floats() -> None:
    assert validate_params({"max_depth": 8, "output_scale": 1}) == []
    p = normalize({**DEFAULTS, "max_depth": 8})
    assert p["max_depth"] == 8.0 and isinstance(p["max_depth"], float)
    assert isinstance(p["points_stride"], int)


def test_startup_only_changes_are_detected() -> None:
    assert changed_startup_params(DEFAULTS, {"backend": "torch", "min_depth": 1.0}) == ["backend"]
    assert changed_startup_params(DEFAULTS, {"backend": "auto", "output_scale": 0.5}) == []


def test_rectify_takes_a_bool_or_a_word() -> None:
    """`-p rectify:=false` arrives as a bool, `rectify: auto` as a string: both are fine."""
    for value, word in ((False, "false"), (True, "true"), ("AUTO", "auto"), ("off", "false")):
        assert validate_params({"rectify": value}) == [] and normalize({"rectify": value})["rectify"] == word


@pytest.mark.parametrize("bad,needle", [
    ({"scale_anchor.mode": "ceiling"}, "scale_anchor.mode 'ceiling'"),
    ({"scale_anchor.mode": "floor"}, "camera_height must be in"),            # floor without a height
    ({"scale_anchor.mode": "floor", "scale_anchor.camera_height": 0.4, "scale_anchor.tolerance_deg": 0.0},
     "tolerance_deg"),
    ({"scale_anchor.hold_s": -1.0}, "hold_s"),
    ({"scale_anchor.normal": "sideways"}, "scale_anchor.normal"),
])
def test_scale_anchor_parameters_are_checked(bad: dict, needle: str) -> None:
    errors = validate_params(bad)
    assert any(needle in e for e in errors), errors
    assert validate_params({"scale_anchor.mode": "floor", "scale_anchor.camera_height": 0.4}) == []
