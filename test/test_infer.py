"""`reflector infer` on real files: images, a folder, a video, a bag; camera YAML; bad inputs."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reflector_ros.cli import main
from reflector_ros.core.errors import InputError
from reflector_ros.core.camera_info import read_calibration
from reflector_ros.core.camera_yaml import load_camera_yaml

CAMERA_YAML = """\
image_width: 160
image_height: 120
camera_name: test_cam
camera_matrix:
  rows: 3
  cols: 3
  data: [100.0, 0.0, 79.5, 0.0, 101.0, 59.5, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [0.0, 0.0, 0.0, 0.0, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [100.0, 0.0, 79.5, 0.0, 0.0, 101.0, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


def _scene(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(40, 200, 3)
    cv2.rectangle(img, (w // 4, h // 4), (3 * w // 4, 3 * h // 4), tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return img


def _infer(args: list[str], model: Path) -> int:
    return main(["infer", *args, "--model", str(model), "--backend", "onnxruntime"])


def test_camera_yaml(tmp_path: Path) -> None:
    f = tmp_path / "cam.yaml"
    f.write_text(CAMERA_YAML)
    fields = load_camera_yaml(f)
    assert fields.k == (100.0, 0.0, 79.5, 0.0, 101.0, 59.5, 0.0, 0.0, 1.0) and (fields.width, fields.height) == (160, 120)
    cal, notes = read_calibration(fields, (320, 240))
    assert (cal.k[0], cal.k[4], cal.k[2], cal.k[5]) == (200.0, 202.0, 159.5, 119.5) and notes == []
    f.write_text(CAMERA_YAML.replace("data: [100.0, 0.0, 79.5, 0.0, 101.0, 59.5, 0.0, 0.0, 1.0]", "data: [1, 2]"))
    with pytest.raises(InputError, match="camera_matrix.data must be a list of 9"):
        load_camera_yaml(f)
    f.write_text("image_width: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_camera_yaml(f)
    f.write_text(CAMERA_YAML.replace("100.0, 0.0, 79.5", "-5.0, 0.0, 79.5"))   # K and P both unusable
    with pytest.raises(InputError, match="describes no camera"):
        read_calibration(load_camera_yaml(f), (160, 120))
    with pytest.raises(InputError, match="cannot read"):
        load_camera_yaml(tmp_path / "missing.yaml")


def test_images_folder_outputs(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(2):
        cv2.imwrite(str(src / f"f{i}.png"), _scene(seed=i))
    cam = tmp_path / "cam.yaml"
    cam.write_text(CAMERA_YAML)
    out = tmp_path / "out"
    assert _infer([str(src), "--output", str(out), "--camera-info", str(cam), "--npy", "--preview", "--ply"],
                  tiny_model_dir / "tiny.onnx") == 0
    png = cv2.imread(str(out / "f0.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (120, 160)
    depth = np.load(out / "f0.npy")
    assert depth.dtype == np.float32 and depth.shape == (120, 160)
    ok = np.isfinite(depth) & (depth > 0)
    assert ok.mean() > 0.5
    # the PNG is the same depth in millimetres
    assert np.abs(png[ok].astype(np.float64) - depth[ok] * 1000).max() <= 0.5 + 1e-3
    assert cv2.imread(str(out / "f1_preview.png")).shape == (120 + 40, 160, 3)   # the image and its key
    # binary PLY: header, then n * (3 float32 + 3 uint8) little-endian records
    raw = (out / "f0.ply").read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    assert b"format binary_little_endian 1.0" in head and b"property uchar red" in head
    n = int(head.split(b"element vertex ")[1].split(b"\n")[0])
    assert n == ok.sum() and len(body) == n * 15
    rec = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    v, u = np.nonzero(ok)
    assert np.allclose(rec["z"], depth[v, u])
    assert np.allclose(rec["x"], (u - 79.5) * depth[v, u] / 100.0, atol=1e-4)
    assert np.allclose(rec["y"], (v - 59.5) * depth[v, u] / 101.0, atol=1e-4)


def test_flags_and_yaml_rescaled(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A 320x240 image with a 160x120 calibration equals the flags with doubled focal."""
    img = tmp_path / "big.jpg"
    cv2.imwrite(str(img), _scene(240, 320))
    cam = tmp_path / "cam.yaml"
    cam.write_text(CAMERA_YAML)
    a, b = tmp_path / "a", tmp_path / "b"
    model = tiny_model_dir / "tiny.onnx"
    assert _infer([str(img), "-o", str(a), "--camera-info", str(cam), "--npy"], model) == 0
    assert _infer([str(img), "-o", str(b), "--fx", "200", "--fy", "202", "--cx", "159.5", "--cy", "119.5", "--npy"],
                  model) == 0
    np.testing.assert_allclose(np.load(a / "big.npy"), np.load(b / "big.npy"), rtol=1e-6)


LENS_YAML = (CAMERA_YAML.replace("data: [0.0, 0.0, 0.0, 0.0, 0.0]", "data: [-0.3, 0.1, 0.002, -0.001, 0.0]")
             .replace("data: [100.0, 0.0, 79.5, 0.0, 0.0, 101.0, 59.5, 0.0, 0.0, 0.0, 1.0, 0.0]",
                      "data: [80.0, 0.0, 82.0, 0.0, 0.0, 80.0, 57.0, 0.0, 0.0, 0.0, 1.0, 0.0]"))


def test_camera_yaml_distortion_is_taken_out(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A barrel lens with a wider P: depth and PLY live in P's camera, unseen pixels are NaN."""
    img = tmp_path / "raw.png"
    cv2.imwrite(str(img), _scene())
    cam = tmp_path / "lens.yaml"
    cam.write_text(LENS_YAML)
    model = tiny_model_dir / "tiny.onnx"
    assert _infer([str(img), "-o", str(tmp_path / "r"), "--camera-info", str(cam), "--npy", "--ply"], model) == 0
    assert _infer([str(img), "-o", str(tmp_path / "n"), "--camera-info", str(cam), "--npy", "--rectify", "false"],
                  model) == 0
    rect, plain = np.load(tmp_path / "r" / "raw.npy"), np.load(tmp_path / "n" / "raw.npy")
    k = np.array([[100.0, 0, 79.5], [0, 101.0, 59.5], [0, 0, 1]])
    mx, my = cv2.initUndistortRectifyMap(k, np.array([-0.3, 0.1, 0.002, -0.001, 0.0]), None,
                                         np.array([[80.0, 0, 82.0], [0, 80.0, 57.0], [0, 0, 1]]), (160, 120),
                                         cv2.CV_32FC1)
    unseen = (mx < -1) | (mx > 160) | (my < -1) | (my > 120)
    assert unseen.sum() > 20 and np.isnan(rect[unseen]).all()
    assert np.isfinite(plain[unseen]).mean() > 0.9           # not rectified: nothing masked
    assert np.isfinite(rect[~unseen]).mean() > 0.9
    raw = (tmp_path / "r" / "raw.ply").read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    rec = np.frombuffer(body, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    v, u = np.nonzero(np.isfinite(rect) & (rect > 0))
    assert np.allclose(rec["x"], (u - 82.0) * rect[v, u] / 80.0, atol=1e-4)   # P, not K
    assert np.allclose(rec["y"], (v - 57.0) * rect[v, u] / 80.0, atol=1e-4)
    cam.write_text(LENS_YAML.replace("data: [-0.3, 0.1, 0.002, -0.001, 0.0]", "data: [-0.3, oops]"))
    with pytest.raises(InputError, match="distortion_coefficients"):
        load_camera_yaml(cam)


def test_video(tmp_path: Path, tiny_model_dir: Path) -> None:
    vid = tmp_path / "clip.avi"
    wr = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    assert wr.isOpened()
    for i in range(5):
        wr.write(_scene(seed=i))
    wr.release()
    out = tmp_path / "out"
    assert _infer([str(vid), "-o", str(out), "--fx", "100", "--every", "2"], tiny_model_dir / "tiny.onnx") == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["clip_000000.png", "clip_000002.png", "clip_000004.png"]
    # a video's own folder may hold the outputs: no input image is there to overwrite
    assert _infer([str(vid), "-o", str(tmp_path), "--fx", "100", "--max-frames", "1"], tiny_model_dir / "tiny.onnx") == 0
    assert (tmp_path / "clip_000000.png").exists()


def test_mp4_video(tmp_path: Path, tiny_model_dir: Path) -> None:
    vid = tmp_path / "clip.mp4"
    wr = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    if not wr.isOpened():
        pytest.skip("this OpenCV build has no mp4v encoder")
    for i in range(3):
        wr.write(_scene(seed=i))
    wr.release()
    out = tmp_path / "out"
    assert _infer([str(vid), "-o", str(out), "--fx", "100"], tiny_model_dir / "tiny.onnx") == 0
    assert len(list(out.glob("clip_*.png"))) == 3


def _write_bag(path: Path, n: int = 3, d: tuple[float, ...] = (0.0,) * 5,
               p: tuple[float, ...] = (100, 0, 79.5, 0, 0, 101, 59.5, 0, 0, 0, 1, 0),
               image_topic: str = "/cam/color/image_raw", depth_topic: str | None = None,
               k: tuple[float, ...] = (100, 0, 79.5, 0, 101, 59.5, 0, 0, 1), info_wh: tuple[int, int] = (160, 120)) -> None:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image, Info = ts.types["sensor_msgs/msg/Image"], ts.types["sensor_msgs/msg/CameraInfo"]
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    ROI = ts.types["sensor_msgs/msg/RegionOfInterest"]
    with Writer(path, version=8) as w:
        ci = w.add_connection(image_topic, Image.__msgtype__, typestore=ts)
        cc = w.add_connection("/cam/color/camera_info", Info.__msgtype__, typestore=ts)
        cd = w.add_connection(depth_topic, Image.__msgtype__, typestore=ts) if depth_topic else None
        for i in range(n):
            stamp = 1_000_000_000 + i * 100_000_000
            hdr = Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")
            info = Info(header=hdr, height=info_wh[1], width=info_wh[0], distortion_model="plumb_bob",
                        d=np.array(d, float), k=np.array(k, float), r=np.eye(3).ravel(),
                        p=np.array(p, float), binning_x=0,
                        binning_y=0, roi=ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            rgb = _scene(seed=i)
            img = Image(header=hdr, height=120, width=160, encoding="rgb8", is_bigendian=0, step=480,
                        data=rgb.reshape(-1))
            w.write(cc, stamp, ts.serialize_cdr(info, Info.__msgtype__))
            w.write(ci, stamp, ts.serialize_cdr(img, Image.__msgtype__))
            if cd is not None:
                depth = Image(header=hdr, height=120, width=160, encoding="16UC1", is_bigendian=0, step=320,
                              data=np.full(120 * 160, 1500, np.uint16).view(np.uint8))
                w.write(cd, stamp, ts.serialize_cdr(depth, Image.__msgtype__))


def test_rgbd_bag_needs_no_image_topic(tmp_path: Path, tiny_model_dir: Path) -> None:
    """An RGB-D recording holds two Image topics; the depth one is never colour input, so
    the colour topic is the only candidate and --image-topic is not needed."""
    bag = tmp_path / "rgbd"
    _write_bag(bag, n=2, depth_topic="/cam/aligned_depth_to_color/image_raw")
    assert _infer([str(bag), "-o", str(tmp_path / "out")], tiny_model_dir / "tiny.onnx") == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


def test_bag_uses_its_camera_info(tmp_path: Path, tiny_model_dir: Path) -> None:
    bag = tmp_path / "rec"
    _write_bag(bag)
    out, ref = tmp_path / "out", tmp_path / "ref"
    model = tiny_model_dir / "tiny.onnx"
    assert _infer([str(bag), "-o", str(out), "--npy"], model) == 0
    names = sorted(p.stem for p in out.glob("*.npy"))
    assert names == ["rec_1000000000", "rec_1100000000", "rec_1200000000"]
    # same frame as a file with the same intrinsics by flags: same depth
    img = tmp_path / "f.png"
    cv2.imwrite(str(img), cv2.cvtColor(_scene(seed=0), cv2.COLOR_RGB2BGR))
    assert _infer([str(img), "-o", str(ref), "--npy", "--fx", "100", "--fy", "101", "--cx", "79.5", "--cy", "59.5"],
                  model) == 0
    np.testing.assert_allclose(np.load(out / "rec_1000000000.npy"), np.load(ref / "f.npy"), rtol=1e-6)


def test_bag_of_a_raw_camera_is_rectified_like_the_yaml(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The bag's camera_info D and P do what the same calibration as a YAML file does."""
    bag = tmp_path / "raw"
    _write_bag(bag, n=1, d=(-0.3, 0.1, 0.002, -0.001, 0.0), p=(80.0, 0, 82.0, 0, 0, 80.0, 57.0, 0, 0, 0, 1, 0))
    model = tiny_model_dir / "tiny.onnx"
    assert _infer([str(bag), "-o", str(tmp_path / "b"), "--npy"], model) == 0
    assert _infer([str(bag), "-o", str(tmp_path / "n"), "--npy", "--rectify", "false"], model) == 0
    img = tmp_path / "f.png"
    cv2.imwrite(str(img), cv2.cvtColor(_scene(seed=0), cv2.COLOR_RGB2BGR))
    cam = tmp_path / "lens.yaml"
    cam.write_text(LENS_YAML)
    assert _infer([str(img), "-o", str(tmp_path / "y"), "--npy", "--camera-info", str(cam)], model) == 0
    from_bag, from_yaml = np.load(tmp_path / "b" / "raw_1000000000.npy"), np.load(tmp_path / "y" / "f.npy")
    np.testing.assert_allclose(from_bag, from_yaml, rtol=1e-6)
    assert np.isnan(from_bag).mean() > 0.02                       # corners the lens never saw
    plain = np.load(tmp_path / "n" / "raw_1000000000.npy")
    assert np.isfinite(plain).all() and not np.allclose(plain, np.nan_to_num(from_bag))
    # the same calibration on a topic named as rectified: auto leaves the frames alone (P still applies)
    rect_bag = tmp_path / "rect"
    _write_bag(rect_bag, n=1, d=(-0.3, 0.1, 0.002, -0.001, 0.0), p=(80.0, 0, 82.0, 0, 0, 80.0, 57.0, 0, 0, 0, 1, 0),
               image_topic="/cam/color/image_rect")
    assert _infer([str(rect_bag), "-o", str(tmp_path / "r"), "--npy"], model) == 0
    np.testing.assert_allclose(np.load(tmp_path / "r" / "rect_1000000000.npy"), plain, rtol=1e-6)


def test_a_camera_info_with_only_p_is_read_as_rectified(tmp_path: Path, tiny_model_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """K all zeros and P valid (some drivers on image_rect): a YAML and a bag both give the
    depth of the same calibration with K filled in, and say how they read it."""
    model = tiny_model_dir / "tiny.onnx"
    img = tmp_path / "f.png"
    cv2.imwrite(str(img), cv2.cvtColor(_scene(seed=0), cv2.COLOR_RGB2BGR))
    full, p_only = tmp_path / "full.yaml", tmp_path / "p_only.yaml"
    full.write_text(CAMERA_YAML)
    p_only.write_text(CAMERA_YAML.replace("data: [100.0, 0.0, 79.5, 0.0, 101.0, 59.5, 0.0, 0.0, 1.0]",
                                          "data: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]"))
    assert _infer([str(img), "-o", str(tmp_path / "k"), "--npy", "--camera-info", str(full)], model) == 0
    capsys.readouterr()
    assert _infer([str(img), "-o", str(tmp_path / "p"), "--npy", "--camera-info", str(p_only)], model) == 0
    assert "no K but a valid P" in capsys.readouterr().err
    ref = np.load(tmp_path / "k" / "f.npy")
    np.testing.assert_allclose(np.load(tmp_path / "p" / "f.npy"), ref, rtol=1e-6)
    bag = tmp_path / "rect"
    _write_bag(bag, n=1, k=(0.0,) * 9, image_topic="/cam/color/image_rect")
    assert _infer([str(bag), "-o", str(tmp_path / "b"), "--npy"], model) == 0
    assert "no K but a valid P" in capsys.readouterr().err
    np.testing.assert_allclose(np.load(tmp_path / "b" / "rect_1000000000.npy"), ref, rtol=1e-6)
    # neither K nor P: refused, nothing written
    _write_bag(tmp_path / "none", n=1, k=(0.0,) * 9, p=(0.0,) * 12)
    assert _infer([str(tmp_path / "none"), "-o", str(tmp_path / "n"), "--npy"], model) != 0
    assert not list((tmp_path / "n").glob("*.npy"))


def test_a_bags_camera_info_of_another_aspect_is_warned_like_the_node(tmp_path: Path, tiny_model_dir: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A recorded camera_info is the driver's, as on the node's topic: stretched with the
    node's warning. A --camera-info file of that aspect is the user's, and is refused unless
    --scale-calibration."""
    model = tiny_model_dir / "tiny.onnx"
    bag = tmp_path / "odd"
    _write_bag(bag, n=1, k=(50, 0, 39.5, 0, 50, 29.5, 0, 0, 1), p=(50, 0, 39.5, 0, 0, 50, 29.5, 0, 0, 0, 1, 0),
               info_wh=(80, 40))
    assert _infer([str(bag), "-o", str(tmp_path / "b"), "--npy"], model) == 0
    assert "another aspect ratio" in capsys.readouterr().err
    assert (tmp_path / "b" / "odd_1000000000.npy").is_file()
    cam = tmp_path / "odd.yaml"
    cam.write_text(CAMERA_YAML.replace("image_width: 160", "image_width: 80").replace("image_height: 120",
                                                                                      "image_height: 40"))
    assert _infer([str(bag), "-o", str(tmp_path / "y"), "--npy", "--camera-info", str(cam)], model) != 0
    assert "--scale-calibration" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "not_image", "no_intrinsics", "unknown_ext", "empty_dir", "both",
                                  "zero_fx", "nan_cx"])
def test_bad_inputs_give_clear_errors(case: str, tmp_path: Path, tiny_model_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "ok.png"
    cv2.imwrite(str(img), _scene())
    args = {
        "missing": ([str(tmp_path / "nope.png"), "--fx", "100"], "no such file"),
        "not_image": ([str(tmp_path / "bad.jpg"), "--fx", "100"], "not a readable image"),
        "no_intrinsics": ([str(img)], "no intrinsics"),
        "unknown_ext": ([str(tmp_path / "x.txt"), "--fx", "100"], "unknown input type"),
        "empty_dir": ([str(tmp_path / "empty"), "--fx", "100"], "holds no images"),
        "both": ([str(img), "--fx", "100", "--camera-info", str(tmp_path / "c.yaml")], "not both"),
        "zero_fx": ([str(img), "--fx", "0"], "--fx 0.0: focal lengths must be positive"),     # before any frame
        "nan_cx": ([str(img), "--fx", "100", "--cx", "nan"], "--cx nan: "),
    }[case]
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "x.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    assert _infer([*args[0], "-o", str(tmp_path / "out")], tiny_model_dir / "tiny.onnx") == 2
    assert args[1] in capsys.readouterr().err


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The JPEG with an APP1 Exif segment holding one IFD0 entry: Orientation (0x0112)."""
    import struct

    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + app1 + jpeg[2:]


def test_exif_rotation_is_ignored_and_a_rotated_calibration_refused(tmp_path: Path, tiny_model_dir: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Drivers and calibrations work on stored pixels: a JPEG tagged "rotate 90" is read as
    stored, so its stored-pixel calibration applies unchanged; a calibration of another
    aspect (as after a rotation) is refused unless --scale-calibration."""
    ok, enc = cv2.imencode(".jpg", _scene(120, 160), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    plain, tagged = tmp_path / "plain.jpg", tmp_path / "tagged.jpg"
    plain.write_bytes(enc.tobytes())
    tagged.write_bytes(_with_exif_orientation(enc.tobytes(), 6))
    assert cv2.imread(str(tagged)).shape == (160, 120, 3)     # OpenCV itself would rotate it
    cam = tmp_path / "cam.yaml"
    cam.write_text(CAMERA_YAML)
    model = tiny_model_dir / "tiny.onnx"
    for name, img in (("a", plain), ("b", tagged)):
        assert _infer([str(img), "-o", str(tmp_path / name), "--camera-info", str(cam), "--npy"], model) == 0
    a, b = np.load(tmp_path / "a" / "plain.npy"), np.load(tmp_path / "b" / "tagged.npy")
    assert b.shape == (120, 160)
    np.testing.assert_array_equal(a, b)
    rotated = tmp_path / "rot.yaml"     # the same camera described for 120x160 (portrait)
    rotated.write_text(CAMERA_YAML.replace("image_width: 160", "image_width: 120")
                       .replace("image_height: 120", "image_height: 160"))
    capsys.readouterr()
    assert _infer([str(plain), "-o", str(tmp_path / "c"), "--camera-info", str(rotated)], model) == 2
    assert "another aspect ratio" in capsys.readouterr().err
    assert _infer([str(plain), "-o", str(tmp_path / "d"), "--camera-info", str(rotated), "--scale-calibration"],
                  model) == 0


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height in its IHDR, with one row's worth of pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * min(width, 1000)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_bad_file_is_skipped_and_the_rest_written(tmp_path: Path, tiny_model_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A folder with good photos and files that are no colour photo: an empty file, a
    truncated JPEG, a 16-bit single-channel PNG (a depth map), a header declaring a size over
    the limit (refused from the header: the file holds no pixels to decode). Each is skipped
    with its reason, the good ones are written, and the exit code says some were skipped;
    8-bit grey and RGBA photos are colour input."""
    src = tmp_path / "mix"
    src.mkdir()
    cv2.imwrite(str(src / "a_good.png"), _scene(seed=1))
    cv2.imwrite(str(src / "b_grey.png"), cv2.cvtColor(_scene(seed=2), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(src / "c_rgba.png"), cv2.cvtColor(_scene(seed=3), cv2.COLOR_BGR2BGRA))
    (src / "d_empty.png").write_bytes(b"")
    ok, jpg = cv2.imencode(".jpg", _scene(seed=4))
    (src / "e_trunc.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])
    cv2.imwrite(str(src / "f_depth.png"), np.full((120, 160), 1500, np.uint16))
    (src / "g_huge.png").write_bytes(_png_header_only(9000, 9000))
    (src / "h_bomb.png").write_bytes(_png_header_only(100000, 100000))
    out = tmp_path / "out"
    capsys.readouterr()
    assert _infer([str(src), "-o", str(out), "--fx", "100"], tiny_model_dir / "tiny.onnx") == 1
    err = capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["a_good.png", "b_grey.png", "c_rgba.png"]
    for needle in ("d_empty.png: empty file", "e_trunc.jpg: truncated JPEG", "f_depth.png: 1-channel uint16",
                   "g_huge.png: size 9000x9000 is over", "h_bomb.png: width 100000 is not a usable image size", "skipped 5"):
        assert needle in err.replace(f"{src}/", ""), needle
    # --every applies to a folder's files too; nothing usable at all is an error
    assert _infer([str(src), "-o", str(tmp_path / "every"), "--fx", "100", "--every", "2"],
                  tiny_model_dir / "tiny.onnx") == 1
    assert sorted(p.name for p in (tmp_path / "every").glob("*.png")) == ["a_good.png", "c_rgba.png"]
    assert _infer([str(src / "f_depth.png"), "-o", str(tmp_path / "none"), "--fx", "100"], tiny_model_dir / "tiny.onnx") == 2


def test_outputs_never_overwrite_inputs(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-o naming the input folder would replace the photos with depth PNGs: refused before
    anything runs. So is -o naming a file, and a file that cannot be written is an error, not
    a 'wrote' line."""
    src = tmp_path / "imgs"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _scene())
    before = (src / "a.png").read_bytes()
    model = tiny_model_dir / "tiny.onnx"
    assert _infer([str(src), "-o", str(src), "--fx", "100"], model) == 2
    assert _infer([str(src / "a.png"), "-o", str(src), "--fx", "100"], model) == 2
    assert "where the input images are" in capsys.readouterr().err
    assert (src / "a.png").read_bytes() == before and sorted(p.name for p in src.iterdir()) == ["a.png"]
    (tmp_path / "afile").write_text("x")
    assert _infer([str(src), "-o", str(tmp_path / "afile"), "--fx", "100"], model) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_depth_range_and_backend_errors_are_messages(tmp_path: Path, tiny_model_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """infer cuts depth to the node's range by default ([0.2, 10] m) or the one given; a
    backend that cannot start here is a one-line error."""
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), _scene())
    model = tiny_model_dir / "tiny.onnx"
    assert _infer([str(img), "-o", str(tmp_path / "wide"), "--fx", "100", "--npy", "--min-depth", "0",
                   "--max-depth", "65"], model) == 0
    wide = np.load(tmp_path / "wide" / "a.npy")
    lo, hi = np.nanpercentile(wide, [30, 70])
    assert _infer([str(img), "-o", str(tmp_path / "cut"), "--fx", "100", "--npy", "--min-depth", str(lo),
                   "--max-depth", str(hi)], model) == 0
    cut = np.load(tmp_path / "cut" / "a.npy")
    assert np.array_equal(np.isfinite(cut), (wide >= lo) & (wide <= hi))
    for bad in (["--max-depth", "nan"], ["--min-depth", "5", "--max-depth", "2"], ["--max-depth", "70"]):
        assert _infer([str(img), "-o", str(tmp_path / "x"), "--fx", "100", *bad], model) == 2
        assert "--min-depth and --max-depth" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(["infer", str(img), "-o", str(tmp_path / "y"), "--fx", "100", "--backend", "torch-cuda"]) == 2
        assert "backend 'torch-cuda' cannot start here" in capsys.readouterr().err


def test_names_trailing_bytes_and_file_lists(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Files that share a stem get distinct outputs that no other input's name can take
    (image.jpg / image.png / image_1.jpg; x.jpg / x_preview.jpg with --preview); a JPEG
    with bytes after its end marker (cameras append data) is read; --every applies to a list
    of image files as to a folder."""
    src = tmp_path / "same"
    src.mkdir()
    for name, seed in (("image.jpg", 1), ("image.png", 2), ("image_1.jpg", 3), ("x.jpg", 4), ("x_preview.jpg", 5)):
        cv2.imwrite(str(src / name), _scene(seed=seed))
    (src / "x.jpg").write_bytes((src / "x.jpg").read_bytes() + bytes(4096))   # trailing data after EOI
    model = tiny_model_dir / "tiny.onnx"
    out = tmp_path / "out"
    assert _infer([str(src), "-o", str(out), "--fx", "100", "--npy", "--preview"], model) == 0
    names = sorted(p.name for p in out.glob("*.npy"))
    assert len(names) == 5 and "image.npy" in names and "image_1.npy" in names and "x.npy" in names
    assert len(list(out.glob("*_preview.png"))) == 5
    # each output is its own input's: image_1.npy comes from image_1.jpg
    alone = tmp_path / "alone"
    assert _infer([str(src / "image_1.jpg"), "-o", str(alone), "--fx", "100", "--npy"], model) == 0
    np.testing.assert_array_equal(np.load(out / "image_1.npy"), np.load(alone / "image_1.npy"))
    files = sorted(str(p) for p in src.glob("*.jpg"))
    assert _infer([*files, "-o", str(tmp_path / "every"), "--fx", "100", "--every", "2"], model) == 0
    assert len(list((tmp_path / "every").glob("*.png"))) == 2


def test_long_names_are_cut_to_fit(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Input names near the file-name limit (255 bytes) still give every output, <name>_preview.png
    included: the stem is cut at a character boundary (2-byte UTF-8 here) and numbered when two
    cut stems collide."""
    src = tmp_path / "long"
    src.mkdir()
    for tail, seed in (("a", 1), ("b", 2)):
        cv2.imwrite(str(src / ("é" * 120 + tail + ".jpg")), _scene(seed=seed))
    out = tmp_path / "out"
    assert _infer([str(src), "-o", str(out), "--fx", "100", "--preview"], tiny_model_dir / "tiny.onnx") == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 4 and sum(n.endswith("_preview.png") for n in names) == 2
    assert all(len(n.encode()) <= 255 for n in names)
    assert sum("~1" in n for n in names) == 2          # the second stem and its preview


def test_a_non_utf8_file_name_is_written_under_its_own_bytes(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A name in another encoding (Latin-1 'café' from an old camera card) is read and its
    outputs keep its bytes, instead of the run stopping on an encoding error."""
    import os

    src = tmp_path / "in"
    src.mkdir()
    ok = cv2.imwrite(str(src / "plain.png"), _scene(seed=1))
    assert ok
    (src / os.fsdecode(b"caf\xe9.png")).write_bytes((src / "plain.png").read_bytes())
    out = tmp_path / "out"
    assert _infer([str(src), "-o", str(out), "--fx", "100"], tiny_model_dir / "tiny.onnx") == 0
    assert sorted(os.fsencode(p.name) for p in out.iterdir()) == [b"caf\xe9.png", b"plain.png"]


def test_camera_height_log_keeps_non_utf8_names(tmp_path: Path, tiny_model_dir: Path) -> None:
    """scale_anchor.csv names each frame by its file name, whatever its encoding."""
    import os

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "plain.png"), _scene(seed=1))
    (src / os.fsdecode(b"caf\xe9.png")).write_bytes((src / "plain.png").read_bytes())
    out = tmp_path / "out"
    assert _infer([str(src), "-o", str(out), "--fx", "100", "--camera-height", "1.2"], tiny_model_dir / "tiny.onnx") == 0
    rows = (out / "scale_anchor.csv").read_bytes().splitlines()
    assert rows[0] == b"frame,scale,source,floor_inliers" and sorted(r.split(b",")[0] for r in rows[1:]) == [b"caf\xe9", b"plain"]
