"""ROS 2 bags (sqlite3 or mcap) as depth datasets and as image streams for offline work.

A robot's own recordings are the closest data to deployment: this reads them with the
pure-Python ``rosbags`` library (no ROS install needed). The bag is indexed once (topic,
receive time, header stamp: the stamp is read from the first CDR bytes, no image is
decoded); frames are then read one by one by receive time, so a bag is never loaded whole.
Colour and depth are paired by header stamp (nearest within ``max_dt``), intrinsics come
from CameraInfo (same stamp, else the latest before the image, else the nearest).
"""
from __future__ import annotations

import os
import warnings
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.camera_info import CameraInfoFields, read_calibration
from reflector_ros.core.errors import InputError
from reflector_ros.core.limits import MAX_SIDE
from reflector_ros.core.rectify import Calibration, Plan, plan, rectify, rectify_setting, should_rectify
from reflector_ros.data.sample import Sample

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"


@dataclass(frozen=True)
class _Ref:
    """Where one message lives: enough to read it again without scanning the bag."""

    topic: str
    log_ns: int      # bag receive time, the key the storage plugins can seek on
    occurrence: int  # how many earlier messages of this topic share log_ns
    stamp_ns: int    # header stamp, the key for pairing


def _open_reader(path: Path) -> Any:
    """An open AnyReader, or InputError saying why the bag cannot be read."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    if not path.exists():
        raise InputError(f"ROS 2 bag not found: {path}")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as err:  # the library raises many types for damaged files
        raise InputError(f"cannot read ROS 2 bag {path}: {type(err).__name__}: {err}") from None
    return reader


def bag_topic_types(path: str | Path) -> dict[str, str]:
    """{topic: message type} of a bag, for choosing topics (InputError if unreadable)."""
    reader = _open_reader(Path(path))
    try:
        return {t: str(info.msgtype) for t, info in reader.topics.items()}
    finally:
        reader.close()


def _topic_list(reader: Any) -> str:
    return ", ".join(f"{t} ({c.msgtype})" for t, c in sorted(reader.topics.items())) or "none"


def _check_topic(reader: Any, path: Path, topic: str, types: tuple[str, ...]) -> None:
    topics = reader.topics
    if topic not in topics:
        raise InputError(f"topic {topic!r} is not in bag {path}; topics present: {_topic_list(reader)}")
    if topics[topic].msgtype not in types:
        raise InputError(f"topic {topic!r} in bag {path} is {topics[topic].msgtype}, expected {' or '.join(types)}")


def _stamp_ns(raw: bytes | memoryview) -> int:
    """Header stamp from CDR bytes: every message used here starts with std_msgs/Header."""
    if len(raw) < 12:
        raise InputError("message too short to hold a header")
    little = raw[1] & 1  # encapsulation id 0x0001 = CDR little-endian
    sec, nsec = struct.unpack("<iI" if little else ">iI", bytes(raw[4:12]))
    return sec * 1_000_000_000 + nsec


def _index(reader: Any, topics: Sequence[str]) -> dict[str, list[_Ref]]:
    """One pass over the bag's raw records of these topics, nothing decoded."""
    conns = [c for c in reader.connections if c.topic in topics]
    refs: dict[str, list[_Ref]] = {t: [] for t in topics}
    last: dict[str, tuple[int, int]] = {}
    for conn, log_ns, raw in reader.messages(connections=conns):
        prev_ns, prev_k = last.get(conn.topic, (None, -1))
        k = prev_k + 1 if prev_ns == log_ns else 0
        last[conn.topic] = (log_ns, k)
        refs[conn.topic].append(_Ref(conn.topic, log_ns, k, _stamp_ns(raw)))
    for topic, items in refs.items():
        if items and not any(r.stamp_ns for r in items):  # driver never stamps: receive time is all there is
            refs[topic] = [_Ref(r.topic, r.log_ns, r.occurrence, r.log_ns) for r in items]
    return refs


def _info_fields(msg: Any) -> CameraInfoFields | None:
    """A camera_info's fields (core.camera_info), or None where it describes no camera
    (read_calibration would refuse it), so such messages are skipped like the node skips them."""
    try:
        return CameraInfoFields.from_msg(msg).checked()
    except InputError:
        return None


def _calibration(fields: CameraInfoFields, width: int, height: int) -> tuple[Calibration, list[str]] | None:
    """The camera_info's calibration at the image's size and the notes the node would log
    (P-only reading, another aspect ratio); None where the node would refuse it."""
    try:
        return read_calibration(fields, (width, height))
    except InputError:
        return None


def _pick_info(stamps: np.ndarray, stamp: int) -> int:
    """Same stamp, else the latest before, else the nearest after (info late at bag start)."""
    j = int(np.searchsorted(stamps, stamp, side="right")) - 1
    return j if j >= 0 else 0


def decode_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """RGB uint8 from an Image or CompressedImage message (core.decode does the work)."""
    from reflector_ros.core.decode import decode_compressed, decode_image

    if msgtype == COMPRESSED:
        return decode_compressed(msg.data, msg.format)
    return decode_image(msg.data, msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian)


def decode_depth(msg: Any, msgtype: str = IMAGE) -> np.ndarray:
    """float32 metres, 0 invalid, from a 16UC1 (mm) or 32FC1 (m) Image (REP 118), or from
    a compressedDepth CompressedImage (core.decode.decode_compressed_depth)."""
    if msgtype == COMPRESSED:
        from reflector_ros.core.decode import decode_compressed_depth

        return decode_compressed_depth(msg.data, msg.format)
    enc = str(msg.encoding).upper()
    dtypes = {"16UC1": np.uint16, "MONO16": np.uint16, "32FC1": np.float32}
    if enc not in dtypes:
        raise InputError(f"depth encoding {msg.encoding!r} not supported; expected 16UC1 (mm) or 32FC1 (m)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE):
        raise InputError(f"depth image size {w}x{h} out of range (1..{MAX_SIDE})")
    dtype = np.dtype(dtypes[enc]).newbyteorder(">" if msg.is_bigendian else "<")
    if step < w * dtype.itemsize:
        raise InputError(f"depth step {step} < width {w} x {dtype.itemsize} bytes")
    buf = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if buf.size < step * h:
        raise InputError(f"depth data has {buf.size} bytes, expected step {step} x height {h}")
    rows = buf[: step * h].reshape(h, step)[:, : w * dtype.itemsize]
    values = np.ascontiguousarray(rows).view(dtype).reshape(h, w)
    if dtype.itemsize == 2:
        return values.astype(np.float32) / np.float32(1000.0)
    depth = values.astype(np.float32)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth


class _LazyBag:
    """An AnyReader opened on first use in each process (safe with forking DataLoaders)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: Any = None
        self._pid = -1

    def reader(self) -> Any:
        if self._reader is None or self._pid != os.getpid():
            self._reader, self._pid = _open_reader(self.path), os.getpid()
        return self._reader

    def read(self, ref: _Ref) -> tuple[Any, str]:
        """Deserialised message and its type for one indexed record."""
        reader = self.reader()
        conns = [c for c in reader.connections if c.topic == ref.topic]
        k = 0
        for conn, _, raw in reader.messages(connections=conns, start=ref.log_ns, stop=ref.log_ns + 1):
            if k == ref.occurrence:
                try:
                    return reader.deserialize(raw, conn.msgtype), conn.msgtype
                except Exception as err:
                    raise InputError(f"{self.path}: cannot decode {ref.topic} at {ref.log_ns} ns: {err}") from None
            k += 1
        raise InputError(f"{self.path}: message {ref.topic} at {ref.log_ns} ns vanished (bag changed on disk?)")

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_reader": None, "_pid": -1}


class BagDataset(Sequence[Sample]):
    """Colour frames of a bag with matched depth and intrinsics, as Samples.

    Without ``depth_topic`` the depth is all zeros (invalid): useful for inference
    sets, not for training. Intrinsics come from ``camera_info_topic`` or, failing
    that, from ``intrinsics=(fx, fy, cx, cy)``. Colour frames with no depth within
    ``max_dt`` seconds are left out (``self.unmatched`` counts them).

    ``rectify`` (auto | true | false, as the node's parameter): a camera_info with
    distortion rectifies colour and depth alike into P's camera, so the network trains on
    the frames the node will feed it; depth the lens never saw becomes 0 (invalid). auto
    skips image topics named as rectified (image_rect, with depth registered to it).
    """

    def __init__(self, path: str | Path, image_topic: str, depth_topic: str | None = None,
                 camera_info_topic: str | None = None, max_dt: float = 0.02,
                 intrinsics: tuple[float, float, float, float] | None = None, rectify: str | bool = "auto") -> None:
        self.path = Path(path)
        self.rectify = rectify_setting(rectify)
        should_rectify(self.rectify, image_topic)   # refuse a bad setting now, not at the first frame
        self._plans: dict[Calibration, tuple[Plan, tuple | None]] = {}   # rebuilt per worker, not pickled
        if camera_info_topic is None and intrinsics is None:
            raise InputError(f"bag {self.path}: give camera_info_topic or intrinsics=(fx, fy, cx, cy)")
        if not max_dt >= 0:
            raise InputError(f"max_dt must be >= 0 seconds, got {max_dt}")
        self.image_topic, self.depth_topic, self.info_topic = image_topic, depth_topic, camera_info_topic
        self.intrinsics = intrinsics
        reader = _open_reader(self.path)
        try:
            _check_topic(reader, self.path, image_topic, (IMAGE, COMPRESSED))
            if depth_topic:
                _check_topic(reader, self.path, depth_topic, (IMAGE, COMPRESSED))
            if camera_info_topic:
                _check_topic(reader, self.path, camera_info_topic, (CAMERA_INFO,))
            wanted = [t for t in (image_topic, depth_topic) if t]
            try:
                refs = _index(reader, wanted)
                infos = self._read_infos(reader) if camera_info_topic else []
            except InputError:
                raise
            except Exception as err:
                raise InputError(f"cannot read ROS 2 bag {self.path}: {type(err).__name__}: {err}") from None
        finally:
            reader.close()
        images = sorted(refs[image_topic], key=lambda r: r.stamp_ns)
        self._info_stamps = np.array([s for s, _ in infos], dtype=np.int64)
        self._infos = [cal for _, cal in infos]
        if camera_info_topic and not self._infos and intrinsics is None:
            raise InputError(f"bag {self.path}: no usable CameraInfo on {camera_info_topic} (all K zero?)")
        self._pairs: list[tuple[_Ref, _Ref | None]] = []
        if depth_topic:
            depths = sorted(refs[depth_topic], key=lambda r: r.stamp_ns)
            dstamps = np.array([r.stamp_ns for r in depths], dtype=np.int64)
            tol = int(round(max_dt * 1e9))
            for ref in images:
                j = int(np.searchsorted(dstamps, ref.stamp_ns))
                best = min((k for k in (j - 1, j) if 0 <= k < len(depths)),
                           key=lambda k: abs(int(dstamps[k]) - ref.stamp_ns), default=None)
                if best is not None and abs(int(dstamps[best]) - ref.stamp_ns) <= tol:
                    self._pairs.append((ref, depths[best]))
            if not self._pairs:
                raise InputError(f"bag {self.path}: no {image_topic} frame has a {depth_topic} frame within "
                                 f"{max_dt} s ({len(images)} colour, {len(depths)} depth messages); "
                                 f"&max_dt=SECONDS in the spec widens the window")
        else:
            self._pairs = [(ref, None) for ref in images]
        self.unmatched = len(images) - len(self._pairs)
        self._bag = _LazyBag(self.path)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_plans": {}}

    def _plan(self, cal: Calibration, notes: list[str]) -> tuple[Plan, tuple | None]:
        """core.rectify.plan for this calibration, plus float maps for the depth: OpenCV's
        nearest-neighbour on fixed-point maps is off by up to 1 px. What the node would log
        for a new calibration (the camera_info's ``notes``; a lens model that cannot be
        undone, whose frames are then used as they are) is warned once per calibration."""
        if cal not in self._plans:
            how = plan(cal, self.rectify, self.image_topic)
            for note in [*notes, *([how.warning] if how.warning else [])]:
                warnings.warn(f"bag {self.path}: {note}", stacklevel=2)
            self._plans[cal] = (how, None if how.maps is None else cv2.convertMaps(*how.maps, cv2.CV_32FC1))
        return self._plans[cal]

    def _read_infos(self, reader: Any) -> list[tuple[int, CameraInfoFields]]:
        conns = [c for c in reader.connections if c.topic == self.info_topic]
        out = []
        for conn, _, raw in reader.messages(connections=conns):
            fields = _info_fields(reader.deserialize(raw, conn.msgtype))
            if fields is not None:
                out.append((_stamp_ns(raw), fields))
        out.sort(key=lambda x: x[0])
        return out

    def __len__(self) -> int:
        return len(self._pairs)

    def stamp_ns(self, i: int) -> int:
        """Header stamp of colour frame i (for pairing results with other recordings)."""
        return self._pairs[i][0].stamp_ns

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} frames")
        img_ref, depth_ref = self._pairs[i]
        msg, msgtype = self._bag.read(img_ref)
        try:
            rgb = decode_rgb(msg, msgtype)
        except InputError as exc:
            raise InputError(f"bag {self.path}: {self.image_topic} at {img_ref.stamp_ns} ns: {exc}") from None
        h, w = rgb.shape[:2]
        if depth_ref is not None:
            try:
                depth = decode_depth(*self._bag.read(depth_ref))
            except InputError as exc:
                raise InputError(f"bag {self.path}: {self.depth_topic} at {depth_ref.stamp_ns} ns: {exc}") from None
            if depth.shape != (h, w):
                raise InputError(f"bag {self.path}: depth {depth.shape[1]}x{depth.shape[0]} on {self.depth_topic} "
                                 f"is not registered to the {w}x{h} colour image on {self.image_topic}")
        else:
            depth = np.zeros((h, w), np.float32)
        found = _calibration(self._infos[_pick_info(self._info_stamps, img_ref.stamp_ns)], w, h) if self._infos else None
        if found is not None:
            how, depth_maps = self._plan(*found)
            if how.maps is not None:
                rgb = rectify(rgb, *how.maps)
                depth = cv2.remap(depth, *depth_maps, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                if how.seen is not None:
                    depth[~how.seen] = 0.0
            camera = how.intrinsics
        elif self._infos:
            raise InputError(f"bag {self.path}: the camera_info for {img_ref.topic} at {img_ref.stamp_ns} ns "
                             f"cannot be used at {w}x{h}")
        else:
            assert self.intrinsics is not None
            camera = Intrinsics(*self.intrinsics, w, h)
        return Sample(rgb, depth, camera, name=f"{self.path.name}@{img_ref.stamp_ns}")


def iter_bag_images(path: str | Path, image_topic: str, camera_info_topic: str | None = None,
                    max_pending: int = 64) -> Iterator[tuple[int, np.ndarray, CameraInfoFields | None]]:
    """Yield (header stamp ns, RGB uint8, camera_info fields or None) in recording order.

    Streams the bag once (offline inference, INT8 calibration). The fields are the
    latest CameraInfo received so far that describes a camera (core.camera_info).
    Drivers often publish the first info just after the first image, so up to
    ``max_pending`` images before the first info wait for it; None only when no info
    topic is given or none arrives in time.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        _check_topic(reader, path, image_topic, (IMAGE, COMPRESSED))
        if camera_info_topic:
            _check_topic(reader, path, camera_info_topic, (CAMERA_INFO,))
        conns = [c for c in reader.connections if c.topic in (image_topic, camera_info_topic)]
        info: CameraInfoFields | None = None   # the latest usable camera_info
        pending: list[tuple[int, Any, str]] = []

        def emit(stamp: int, msg: Any, msgtype: str) -> tuple[int, np.ndarray, CameraInfoFields | None]:
            return stamp, decode_rgb(msg, msgtype), info

        for conn, _, raw in reader.messages(connections=conns):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as err:
                raise InputError(f"{path}: cannot decode a {conn.topic} message: {err}") from None
            if conn.topic == camera_info_topic:
                info = _info_fields(msg) or info
                if info is not None:
                    for item in pending:
                        yield emit(*item)
                    pending.clear()
            elif camera_info_topic and info is None and len(pending) < max_pending:
                pending.append((_stamp_ns(raw), msg, conn.msgtype))
            else:
                for item in pending:
                    yield emit(*item)
                pending.clear()
                yield emit(_stamp_ns(raw), msg, conn.msgtype)
        for item in pending:
            yield emit(*item)
    finally:
        reader.close()


# ----------------------------------------------------------------------------- poses (self-supervised training)

ODOMETRY = "nav_msgs/msg/Odometry"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"


def _decoded(path: Path, topic: str, types: tuple[str, ...], optional: bool = False) -> Iterator[tuple[int, Any]]:
    """(header stamp ns, decoded message) for every message on a topic, in bag order.

    InputError for a missing topic (``optional``: no messages instead), another type, or
    a message that does not decode. The bag closes when the iteration ends or is dropped.
    """
    reader = _open_reader(path)
    try:
        if optional and topic not in reader.topics:
            return
        _check_topic(reader, path, topic, types)
        for conn, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic == topic]):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as err:
                raise InputError(f"{path}: cannot decode a {topic} message: {type(err).__name__}: {err}") from None
            yield _stamp_ns(raw), msg
    finally:
        reader.close()


def read_odometry(path: str | Path, topic: str = "/odom") -> tuple[np.ndarray, np.ndarray, str, str]:
    """Every nav_msgs/Odometry message of a topic: (header stamps [N] int64 ns, sorted;
    poses [N, 4, 4] float64 T_frame_child, i.e. the child_frame_id (the robot base) in
    header.frame_id (odom), metres; frame_id; child_frame_id). Twist and covariance are
    not used. InputError if the topic is missing, of another type, or empty."""
    from reflector_ros.data.poses import transform

    rows: list[tuple[int, np.ndarray]] = []
    frame, child = "", ""
    for stamp, msg in _decoded(Path(path), topic, (ODOMETRY,)):
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        rows.append((stamp, transform((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))))
        frame, child = str(msg.header.frame_id), str(msg.child_frame_id)
    if not rows:
        raise InputError(f"bag {path}: no messages on {topic}")
    rows.sort(key=lambda r: r[0])
    return (np.array([r[0] for r in rows], np.int64), np.stack([r[1] for r in rows]), frame, child)


def read_static_transforms(path: str | Path, topic: str = "/tf_static") -> list[tuple[str, str, np.ndarray]]:
    """The bag's static transforms: [(parent frame, child frame, T_parent_child 4x4)], from
    tf2_msgs/TFMessage on ``topic``; [] when the bag has no such topic."""
    from reflector_ros.data.poses import transform

    out = []
    for _, msg in _decoded(Path(path), topic, (TF_MESSAGE,), optional=True):
        for tf in msg.transforms:
            tr, q = tf.transform.translation, tf.transform.rotation
            out.append((str(tf.header.frame_id), str(tf.child_frame_id),
                        transform((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w))))
    return out


def topic_frame_id(path: str | Path, topic: str) -> str:
    """header.frame_id of the first image on a topic ('' when the topic is empty)."""
    messages = _decoded(Path(path), topic, (IMAGE, COMPRESSED))
    first = next(messages, None)
    messages.close()
    return "" if first is None else str(first[1].header.frame_id)
