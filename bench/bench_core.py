"""Per-stage latency of all the node's non-inference work at 640x480 (medians, ms).

    PYTHONPATH=. .venv/bin/python bench/bench_core.py [--reps 100] [--json]

Also compares our point cloud path with sensor_msgs_py.point_cloud2.create_cloud on the
same depth when sensor_msgs_py is importable (it is not on PyPI), and the ways of filling
a uint8[] message field.
"""
from __future__ import annotations

import argparse
import array
import json
import statistics
import sys
import time
from collections.abc import Callable

import cv2
import numpy as np

from reflector_ros.core.camera import intrinsics_from_k
from reflector_ros.core.decode import decode_compressed, decode_image
from reflector_ros.core.depth import Validity, colorize, finalize_depth, to_millimetres
from reflector_ros.core.pointcloud import backproject, cloud_fields, pack_cloud, ray_lengths, ray_table
from reflector_ros.core.preprocess import preprocess, resize_to
from reflector_ros.core.rectify import calibration, rectify, undistort_maps
from reflector_ros.meta import ModelMeta, NetInput

H, W = 480, 640


def median_ms(fn: Callable[[], object], reps: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100, help="timed repetitions per stage (>= 50 recommended)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    cv2.setNumThreads(2)
    reps = max(1, args.reps)

    from std_msgs.msg import Header

    from reflector_ros.ros import convert
    from sensor_msgs.msg import CameraInfo

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) % 256], axis=2).astype(np.uint8)
    rgb_bytes = rgb.tobytes()
    bgr_bytes = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).tobytes()
    yuyv_bytes = rng.integers(0, 256, H * W * 2, dtype=np.uint8).tobytes()   # content does not matter for speed
    padded = np.zeros((H, W * 3 + 64), np.uint8)
    padded[:, : W * 3] = rgb.reshape(H, -1)
    padded_bytes = padded.tobytes()
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    meta = ModelMeta()
    x_in = np.empty((1, 3, meta.input_height, meta.input_width), np.float32)
    net_depth = rng.uniform(0.3, 12.0, (meta.input_height, meta.input_width)).astype(np.float32)
    net_conf = rng.uniform(0, 1, net_depth.shape).astype(np.float32)
    depth = resize_to(net_depth, (H, W))
    conf = resize_to(net_conf, (H, W))
    final = finalize_depth(depth, conf, Validity(0.1, 10.0, 0.2))
    intr = intrinsics_from_k([525.0, 0, 319.5, 0, 525.0, 239.5, 0, 0, 1], W, H)
    rays = ray_table(intr, 1)
    lengths = ray_lengths(rays)   # cached with the ray table, as the node does
    cloud_out = convert.message_array((H, W, 4), np.float32)   # the node's reused, zero-copy buffers
    lens = calibration([525.0, 0, 319.5, 0, 525.0, 239.5, 0, 0, 1], [-0.3, 0.1, 0.001, 0.001, 0.0],
                       [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [420.0, 0, 320.0, 0, 0, 420.0, 240.0, 0, 0, 0, 1, 0],
                       "plumb_bob", W, H)
    rect_maps = undistort_maps(lens)[:2]   # built once per calibration, as the node does
    fin_out = convert.message_array((H, W), np.float32)
    colored = colorize(final, 0.1, 10.0)
    header = Header(frame_id="camera_optical_frame")

    def points(with_rgb: bool) -> object:
        buf = pack_cloud(final, rays, max_range=8.0, confidence=conf, min_confidence=0.2,
                         rgb=rgb if with_rgb else None, out=cloud_out, lengths=lengths)
        return convert.cloud_msg(header, buf, H, W, with_rgb)

    stages: dict[str, Callable[[], object]] = {
        "decode rgb8": lambda: decode_image(rgb_bytes, "rgb8", W, H, W * 3, 0),
        "decode bgr8": lambda: decode_image(bgr_bytes, "bgr8", W, H, W * 3, 0),
        "decode yuyv": lambda: decode_image(yuyv_bytes, "yuyv", W, H, W * 2, 0),
        "decode bayer_rggb8": lambda: decode_image(yuyv_bytes, "bayer_rggb8", W, H, W, 0),
        "decode rgb8 padded step": lambda: decode_image(padded_bytes, "rgb8", W, H, W * 3 + 64, 0),
        "decode jpeg": lambda: decode_compressed(jpeg, "rgb8; jpeg compressed bgr8"),
        "rectify 640x480 (a lens with distortion, rectify: true)": lambda: rectify(rgb, *rect_maps),
        "preprocess 640x480 -> 256x320": lambda: preprocess(rgb, meta, NetInput(256, 320, 1.0), out=x_in),
        "resize back (one map)": lambda: resize_to(net_depth, (H, W)),
        "finalize_depth": lambda: finalize_depth(depth, conf, Validity(0.1, 10.0, 0.2), out=fin_out),
        "colorize": lambda: colorize(final, 0.1, 10.0),
        "to_millimetres": lambda: to_millimetres(final),
        "depth msg 32FC1 (copy)": lambda: convert.depth_image_msg(header, final),
        "depth msg 32FC1 (message_array, node)": lambda: convert.depth_image_msg(header, fin_out),
        "depth msg 16UC1": lambda: convert.depth_image_msg(header, final, "16UC1"),
        "confidence msg": lambda: convert.confidence_msg(header, conf),
        "colored msg": lambda: convert.colored_msg(header, colored),
        "camera_info msg": lambda: convert.camera_info_msg(header, intr),
        "points msg xyz (pack + msg)": lambda: points(False),
        "points msg xyzrgb (pack + msg)": lambda: points(True),
        "points msg xyzrgb, no filters (node defaults)": lambda: convert.cloud_msg(
            header, pack_cloud(final, rays, rgb=rgb, out=cloud_out), H, W, True),
    }
    # the floor scale anchor (scale_anchor.mode floor): one fit per frame on the network's
    # depth (256x341 for VGA at fx 525), a camera 0.4 m up looking 15 degrees down at a floor
    # with a box on it, through FloorAnchor.update as the pipeline calls it
    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.core.scale_anchor import AnchorSettings, FloorAnchor, up_direction

    net_cam = Intrinsics(280.0, 280.0, 170.0, 127.5, 341, 256)
    vv, uu = np.mgrid[0:256, 0:341].astype(np.float64)
    along = np.stack([(uu - net_cam.cx) / net_cam.fx, (vv - net_cam.cy) / net_cam.fy, np.ones_like(uu)], -1) \
        @ -up_direction(15.0, 0.0)
    floor_depth = np.where(along > 0.02, 0.4 / np.maximum(along, 0.02), 12.0).astype(np.float32)
    floor_depth[150:220, 120:200] *= 0.8                      # a box on the floor
    clock = iter(range(10**9))
    for normal in ("fitted", "expected"):
        anchor = FloorAnchor(AnchorSettings("floor", 0.4, pitch_deg=15.0, normal=normal))
        stages[f"scale anchor, normal {normal}: floor fit + smoothing (network depth 256x341)"] = \
            lambda anchor=anchor: anchor.update(floor_depth, net_cam, 0.033 * next(clock))
    results = {name: median_ms(fn, reps) for name, fn in stages.items()}
    # once per calibration, not per frame: fewer reps
    results["rectify maps 640x480 (once per calibration)"] = median_ms(lambda: undistort_maps(lens), 5, warmup=1)
    lens_info = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
    lens_info.k, lens_info.d, lens_info.r, lens_info.p = lens.k, list(lens.d), lens.r, lens.p
    from reflector_ros.core.camera_info import CameraInfoFields, read_calibration

    fields = CameraInfoFields.from_msg(lens_info)
    results["camera_info -> calibration (a new one)"] = median_ms(lambda: read_calibration(fields, (W, H)), reps)
    results["camera_info -> fields (every message, the cache key)"] = median_ms(
        lambda: CameraInfoFields.from_msg(lens_info), reps)
    per_frame = ["decode rgb8", "preprocess 640x480 -> 256x320", "resize back (one map)", "resize back (one map)",
                 "finalize_depth", "colorize", "depth msg 32FC1 (message_array, node)", "confidence msg", "colored msg",
                 "camera_info msg", "points msg xyz (pack + msg)"]
    results["sum of non-inference work per frame (cloud with range+confidence filters)"] = sum(
        results[k] for k in per_frame)
    defaults = [k for k in per_frame if not k.startswith("points")] + ["points msg xyzrgb, no filters (node defaults)"]
    results["sum of non-inference work per frame (node defaults)"] = sum(results[k] for k in defaults)

    # uint8[] field fill: the three ways of handing 1.2 MB of depth to a message
    from sensor_msgs.msg import Image
    raw = final.view(np.uint8).reshape(-1)

    def fill_frombytes() -> None:
        a = array.array("B")
        a.frombytes(raw.data)
        Image().data = a

    def fill_array_copy() -> None:
        Image().data = array.array("B", raw.tobytes())

    def fill_bytes() -> None:
        Image().data = raw.tobytes()

    fills = {"uint8[] fill: array.frombytes(memoryview)": median_ms(fill_frombytes, reps),
             "uint8[] fill: array.array('B', tobytes())": median_ms(fill_array_copy, reps),
             "uint8[] fill: assign bytes (per-element check)": median_ms(fill_bytes, 3, warmup=1)}
    results.update(fills)

    compare: dict[str, object] = {}
    try:
        from sensor_msgs.msg import PointCloud2, PointField
        from sensor_msgs_py import point_cloud2
    except ImportError:
        compare["sensor_msgs_py"] = "sensor_msgs_py not importable: skipped"
    else:
        fields = [PointField(name=n, offset=o, datatype=t, count=c) for n, o, t, c in cloud_fields(False)]
        plain = finalize_depth(depth, None, Validity(0.1, 10.0))

        def ours() -> PointCloud2:
            return convert.cloud_msg(header, pack_cloud(plain, rays, out=cloud_out), H, W, False)

        def theirs() -> PointCloud2:
            return point_cloud2.create_cloud(header, fields, backproject(plain, rays), point_step=16)

        a, b = ours(), theirs()
        same_xyz = np.array_equal(np.frombuffer(a.data, "<f4").reshape(-1, 4)[:, :3],
                                  np.frombuffer(b.data, "<f4").reshape(-1, 4)[:, :3], equal_nan=True)
        t_ours, t_theirs = median_ms(ours, reps), median_ms(theirs, reps)
        compare = {"points msg ours (pack_cloud + cloud_msg)": t_ours,
                   "points msg sensor_msgs_py (backproject + create_cloud)": t_theirs,
                   "speed-up": t_theirs / t_ours, "identical xyz": bool(same_xyz)}

    if args.json:
        print(json.dumps({"input": f"{W}x{H}", "reps": reps, "median_ms": results, "create_cloud": compare},
                         indent=2))
        return 0
    print(f"median ms over {reps} reps, {W}x{H} input, {cv2.getNumThreads()} OpenCV threads")
    width = max(len(k) for k in [*results, *compare]) + 2
    for name, ms in results.items():
        print(f"{name:<{width}}{ms:9.3f}")
    print()
    for name, val in compare.items():
        print(f"{name:<{width}}{val:9.3f}" if isinstance(val, float) else f"{name:<{width}}{val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
