"""The depth node's parameters: defaults, descriptions and the pure validation rules.

Kept free of rclpy so the rules are unit-tested directly and shared by start-up
(refuse and exit) and `set_parameters` (reject with the reason); ``frame_settings`` turns
them into the pipeline's FrameSettings.
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from reflector_ros.core.errors import InputError
from reflector_ros.core.rectify import RECTIFY_SETTINGS, rectify_setting
from reflector_ros.core.scale_anchor import AnchorSettings
from reflector_ros.pipeline import CloudSettings, FrameSettings

BACKENDS = ("auto", "tensorrt", "torch", "torch-cuda", "torch-cpu", "onnxruntime", "onnxruntime-cuda")
PRECISIONS = ("fp16", "fp32", "int8")
INPUT_QOS = ("sensor_data", "reliable", "best_effort")
OUTPUT_QOS = ("reliable", "best_effort")
ENCODINGS = ("32FC1", "16UC1")
MODEL_SUFFIXES = (".onnx", ".pt", ".engine", ".plan")

# name -> (default, description); config/depth.yaml lists the same names and defaults (a test checks).
PARAMS: dict[str, tuple[Any, str]] = {
    "backend": ("auto", "Inference backend: " + " | ".join(BACKENDS) + "; auto picks the fastest available (start-up only)."),
    "model": ("", "Model file (.onnx, .pt or a TensorRT engine); empty = the embedded default model (start-up only)."),
    "engine_dir": ("", "Where TensorRT engines are cached; empty = the backend's default (start-up only)."),
    "precision": ("fp16", "TensorRT precision: fp16 | fp32 | int8 (start-up only)."),
    "num_threads": (0, "CPU threads for CPU backends; 0 = automatic (start-up only)."),
    "cpu_spin_wait": (False, "ONNX Runtime threads busy-wait between operators: faster when the node has its CPU cores to itself, slower when it shares them with the camera driver and DDS (start-up only)."),
    "compressed_input": (False, "Subscribe image/compressed (CompressedImage) instead of image (start-up only)."),
    "input_qos": ("sensor_data", "Input QoS: sensor_data (best effort, accepts every camera) | reliable | best_effort (start-up only)."),
    "output_qos": ("reliable", "Output QoS: reliable (RViz, depth_image_proc) | best_effort (start-up only)."),
    "depth_encoding": ("32FC1", "depth/image encoding: 32FC1 metres with NaN invalid, or 16UC1 millimetres with 0 invalid."),
    "output_scale": (1.0, "Depth resolution relative to the input image, 0 < s <= 1."),
    "min_depth": (0.2, "Depths below this (metres) are invalid."),
    "max_depth": (10.0, "Depths above this (metres) are invalid."),
    "min_confidence": (0.0, "Pixels with confidence below this are invalid in depth/image, 0..1."),
    "publish_points": (True, "Publish the organized PointCloud2 on points."),
    "points_stride": (1, "Keep every n-th row and column in the cloud (>= 1)."),
    "points_rgb": (True, "Add the image colour (rgb field) to each point."),
    "points_min_range": (0.0, "Points nearer than this (metres, along the ray) are NaN."),
    "points_max_range": (0.0, "Points farther than this (metres, along the ray) are NaN; 0 = no limit."),
    "points_min_confidence": (0.0, "Points with confidence below this are NaN, 0..1."),
    "publish_colored": (True, "Publish a colour-mapped depth (bgr8) on depth/colored."),
    "publish_confidence": (True, "Publish the per-pixel confidence (32FC1, 0..1) on depth/confidence."),
    "rectify": ("auto", "Undistort the image with camera_info's D, R and P first, as image_proc does: auto (unless the image topic is named as rectified, e.g. image_rect) | true | false."),
    "fallback_fx": (0.0, "Without camera_info, assume fx = fy = this (pixels, cx, cy = image centre); 0 = wait for camera_info."),
    "diagnostics_period": (1.0, "Seconds between /diagnostics messages."),
    "scale_anchor.mode": ("none", "Metric scale anchor: none (the network's own scale) | floor (the camera height above a floor in view fixes the scale)."),
    "scale_anchor.camera_height": (0.0, "Metres from the floor to the camera's optical centre (mode floor; your URDF has it)."),
    "scale_anchor.pitch_deg": (0.0, "Expected camera pitch, degrees, positive looking down (REP 103)."),
    "scale_anchor.roll_deg": (0.0, "Expected camera roll about the optical axis, degrees."),
    "scale_anchor.tolerance_deg": (35.0, "How far (degrees) the floor's normal may be from the expected up direction; tighten it when pitch and roll are known."),
    "scale_anchor.normal": ("fitted", "Direction the camera-to-floor distance is measured along: fitted (the normal of the plane fitted to the depth; needs no known attitude) | expected (the up direction from pitch_deg and roll_deg, which must be right: a fixed mount; robust to the network tilting the floor)."),
    "scale_anchor.max_correction": (1.5, "Largest factor either way by which the floor may correct the network's own scale; a frame asking for more is taken to show no floor (a counter top or a seat)."),
    "scale_anchor.min_inliers": (0.2, "Fraction of the sampled lower-view points the floor must hold; lower engages more often, and more often on a table top."),
    "scale_anchor.window": (3, "Frames whose median floor scale outvotes one odd frame."),
    "scale_anchor.hold_s": (2.0, "Seconds the last floor scale is held while no floor is in view, before falling back to the network's scale."),
}

DEFAULTS: dict[str, Any] = {k: v[0] for k, v in PARAMS.items()}
# parameters rclpy or launch give every node: not ours to check
FOREIGN_PARAMS = ("use_sim_time", "start_type_description_service", "qos_overrides.")
STARTUP_ONLY = frozenset({"backend", "model", "engine_dir", "precision", "num_threads", "cpu_spin_wait",
                          "compressed_input", "input_qos", "output_qos"})


def unknown_parameters(given: Any) -> str:
    """The names in ``given`` (the overrides from -p or a params file) that the node does not
    have, each with the closest name it does have, comma-separated; "" when all are known.
    A typo would otherwise leave the default in place without a word."""
    unknown = sorted(n for n in given if n not in PARAMS and not n.startswith(FOREIGN_PARAMS))
    said = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(PARAMS), n=1)
        said.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return ", ".join(said)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def normalize(params: dict[str, Any]) -> dict[str, Any]:
    """Integers where floats are expected become floats (`-p max_depth:=10` is fine), and
    `rectify:=false` (a bool to ROS) becomes the word."""
    out = dict(params)
    if "rectify" in out:
        out["rectify"] = rectify_setting(out["rectify"])
    for key, default in DEFAULTS.items():
        if isinstance(default, float) and _is_number(out.get(key)):
            out[key] = float(out[key])
    return out


def validate_params(params: dict[str, Any], check_files: bool = True) -> list[str]:
    """Every reason these parameter values cannot be used; empty when they are all fine."""
    p = normalize({**DEFAULTS, **params})
    errors: list[str] = [f"unknown parameter '{k}'" for k in params if k not in DEFAULTS]
    bad: set[str] = set()      # wrong types: checks that compare them with another value are skipped

    def both(a: str, b: str) -> bool:
        return a not in bad and b not in bad

    for key, default in DEFAULTS.items():
        v = p[key]
        wrong = None
        if isinstance(default, bool):
            if not isinstance(v, bool):
                wrong = f"{key} must be true or false, got {v!r}"
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int):
                wrong = f"{key} must be an integer, got {v!r}"
        elif isinstance(default, float):
            if not _is_number(v):
                wrong = f"{key} must be a finite number, got {v!r}"
        elif isinstance(default, str) and not isinstance(v, str):
            wrong = f"{key} must be a string, got {v!r}"
        if wrong:
            errors.append(wrong)
            p[key] = default   # so the value checks below still run on every other parameter
            bad.add(key)

    def choice(key: str, allowed: tuple[str, ...]) -> None:
        if p[key] not in allowed:
            errors.append(f"{key} '{p[key]}' is not one of: {', '.join(allowed)}")

    choice("backend", BACKENDS)
    choice("precision", PRECISIONS)
    choice("input_qos", INPUT_QOS)
    choice("output_qos", OUTPUT_QOS)
    choice("depth_encoding", ENCODINGS)
    choice("rectify", RECTIFY_SETTINGS)
    if p["num_threads"] < 0:
        errors.append(f"num_threads must be >= 0 (0 = automatic), got {p['num_threads']}")
    if not 0.0 < p["output_scale"] <= 1.0:
        errors.append(f"output_scale must be in (0, 1], got {p['output_scale']}")
    if p["min_depth"] < 0.0:
        errors.append(f"min_depth must be >= 0, got {p['min_depth']}")
    if both("min_depth", "max_depth") and p["min_depth"] >= p["max_depth"]:
        errors.append(f"min_depth ({p['min_depth']}) must be smaller than max_depth ({p['max_depth']})")
    if both("depth_encoding", "max_depth") and p["depth_encoding"] == "16UC1" and p["max_depth"] > 65.535:
        errors.append(f"max_depth {p['max_depth']} m does not fit 16UC1 millimetres (at most 65.535)")
    for key in ("min_confidence", "points_min_confidence"):
        if not 0.0 <= p[key] <= 1.0:
            errors.append(f"{key} must be in [0, 1], got {p[key]}")
    if p["points_stride"] < 1:
        errors.append(f"points_stride must be >= 1, got {p['points_stride']}")
    if p["points_min_range"] < 0.0:
        errors.append(f"points_min_range must be >= 0, got {p['points_min_range']}")
    if p["points_max_range"] < 0.0:
        errors.append(f"points_max_range must be >= 0 (0 = no limit), got {p['points_max_range']}")
    elif both("points_min_range", "points_max_range") and 0.0 < p["points_max_range"] <= p["points_min_range"]:
        errors.append(f"points_max_range ({p['points_max_range']}) must be larger than points_min_range ({p['points_min_range']})")
    if p["fallback_fx"] < 0.0:
        errors.append(f"fallback_fx must be >= 0 (0 = off), got {p['fallback_fx']}")
    try:
        if not any(k.startswith("scale_anchor.") for k in bad):
            anchor_from_params(p).check()        # mode, normal and every range
    except InputError as exc:
        errors.append(str(exc))
    if not 0.05 <= p["diagnostics_period"] <= 3600.0:
        errors.append(f"diagnostics_period must be in [0.05, 3600] seconds, got {p['diagnostics_period']}")
    if check_files and p["model"]:
        errors += model_file_errors(p["model"])
    if check_files and p["engine_dir"] and Path(p["engine_dir"]).exists() and not Path(p["engine_dir"]).is_dir():
        errors.append(f"engine_dir '{p['engine_dir']}' exists and is not a directory")
    return errors


def anchor_from_params(p: dict[str, Any]) -> AnchorSettings:
    """AnchorSettings from the (normalised) scale_anchor.* parameters."""
    return AnchorSettings(mode=str(p["scale_anchor.mode"]), camera_height=float(p["scale_anchor.camera_height"]),
                          pitch_deg=float(p["scale_anchor.pitch_deg"]), roll_deg=float(p["scale_anchor.roll_deg"]),
                          tolerance_deg=float(p["scale_anchor.tolerance_deg"]), normal=str(p["scale_anchor.normal"]),
                          hold_s=float(p["scale_anchor.hold_s"]),
                          max_correction=float(p["scale_anchor.max_correction"]),
                          min_inliers=float(p["scale_anchor.min_inliers"]), window=int(p["scale_anchor.window"]))


def frame_settings(p: dict[str, Any], cloud: bool) -> FrameSettings:
    """The pipeline's FrameSettings from the (normalised) parameters; ``cloud``: whether the
    points output is wanted this frame."""
    spec = None
    if cloud:
        spec = CloudSettings(int(p["points_stride"]), bool(p["points_rgb"]), float(p["points_min_range"]),
                             float(p["points_max_range"]) if p["points_max_range"] > 0 else math.inf,
                             float(p["points_min_confidence"]))
    return FrameSettings(float(p["output_scale"]), float(p["min_depth"]), float(p["max_depth"]),
                         float(p["min_confidence"]), str(p["rectify"]), spec, anchor_from_params(p))


def model_file_errors(model: str) -> list[str]:
    """A missing, empty or unreadable model file, or one of an unknown kind."""
    path = Path(model).expanduser()
    if not path.exists():
        return [f"model file '{model}' does not exist"]
    if not path.is_file():
        return [f"model '{model}' is not a file"]
    if path.suffix.lower() not in MODEL_SUFFIXES:
        return [f"model '{model}' has suffix '{path.suffix}'; expected one of {', '.join(MODEL_SUFFIXES)}"]
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        return [f"model file '{model}' cannot be read: {exc.strerror}"]
    if not head:
        return [f"model file '{model}' is empty"]
    return []


def updated_params(current: dict[str, Any], changes: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the normalized parameters after ``changes``, "") or (None, why they are refused): a
    start-up-only parameter, or a value (or combination) ``validate_params`` refuses.
    ``current`` and the result are ``normalize``d dicts; ``changes`` maps names to values."""
    restart = changed_startup_params(current, changes)
    if restart:
        return None, f"{', '.join(restart)} can only be set at start-up; restart the node to change it"
    merged = {**current, **changes}
    errors = validate_params(merged, check_files=False)
    if errors:
        return None, "; ".join(errors)
    return normalize(merged), ""


def changed_startup_params(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names whose change needs a restart (backend, QoS, subscriptions)."""
    return sorted(k for k in STARTUP_ONLY if k in new and new[k] != old.get(k))
