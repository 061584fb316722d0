"""Procedural indoor scenes with exact metric depth, ray cast in numpy.

Why: a metric head needs depth that is exact and camera intrinsics that vary, and
real RGB-D data with many focal lengths is scarce. Each frame is a random room with
furniture, clutter, textures and lights, seen by a randomly placed pinhole camera.

World frame: z up, the room spans [0, Lx] x [0, Ly] x [0, Lz]. Primary ray
directions are d = R @ ((u - cx) / fx, (v - cy) / fy, 1), not normalised, so the ray
parameter t of a hit *is* the depth along the optical axis (x right, y down, z forward).
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from reflector_ros.core.camera import Intrinsics
from reflector_ros.core.errors import InputError
from reflector_ros.data.sample import Sample

EPS = 1e-4
MAX_RENDER_SIDE = 4096          # the renderer's own cap per side (the node's image limit is core.limits)
MAX_RENDER_PIXELS = MAX_RENDER_SIDE * MAX_RENDER_SIDE
F32 = np.float32


def check_render_size(height: int, width: int) -> None:
    """InputError unless 8 <= height, width <= MAX_RENDER_SIDE."""
    if not (8 <= height <= MAX_RENDER_SIDE and 8 <= width <= MAX_RENDER_SIDE):
        raise InputError(f"synthetic size {height}x{width} must be within 8..{MAX_RENDER_SIDE} per side")


@dataclass
class Material:
    """Procedural albedo: ``kind`` picks the pattern, colours are sRGB in [0, 1]."""
    kind: str = "plain"     # plain paint wood checker tiles stripes carpet picture books emissive
    c1: tuple[float, float, float] = (0.7, 0.7, 0.7)
    c2: tuple[float, float, float] = (0.3, 0.3, 0.3)
    scale: float = 0.3      # pattern period in metres
    phase: float = 0.0      # random phase / hash seed so equal kinds differ
    glossy: float = 0.0     # specular strength
    emission: float = 0.0   # > 0: a light source surface (lamp panel, window)
    blobs: tuple = ()       # picture: ((u, v, r, (r, g, b)), ...) in [-1, 1] face coords


@dataclass
class Box:
    """Axis-aligned in its own frame, rotated by ``yaw`` about z around its centre.

    ``interior`` boxes (room, corridor) are seen from inside: the exit hit counts.
    ``materials`` has one entry, or six indexed by face = 2 * axis + (normal points +axis);
    for a room that is 4 = ceiling, 5 = floor.
    """
    center: tuple[float, float, float]
    half: tuple[float, float, float]
    materials: list[Material]
    yaw: float = 0.0
    interior: bool = False
    casts_shadow: bool = True


@dataclass
class Sphere:
    center: tuple[float, float, float]
    radius: float
    materials: list[Material]
    casts_shadow: bool = True


@dataclass
class Cylinder:
    """Vertical cylinder from z0 to z1; faces: 0 side, 4 bottom, 5 top."""
    center: tuple[float, float]
    radius: float
    z0: float
    z1: float
    materials: list[Material]
    casts_shadow: bool = True


@dataclass
class Opening:
    """A doorway in room wall ``face`` (0..3) that shows ``corridor`` behind it."""
    face: int
    u0: float
    u1: float
    z0: float
    z1: float
    corridor: Box


@dataclass
class Light:
    pos: tuple[float, float, float]
    color: tuple[float, float, float]
    power: float            # intensity at 1 m (linear units)
    shadows: bool = True


@dataclass
class Scene:
    room: Box
    objects: list = field(default_factory=list)
    lights: list[Light] = field(default_factory=list)
    ambient: tuple[float, float, float] = (0.3, 0.3, 0.3)
    openings: list[Opening] = field(default_factory=list)


@dataclass
class Camera:
    """A posed pinhole camera: where it is, how it looks, and its intrinsics (the project's
    one camera type)."""
    position: tuple[float, float, float]
    rotation: np.ndarray    # (3, 3) columns = optical x, y, z axes in world
    intr: Intrinsics


def camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Optical axes (x right, y down, z forward) in the z-up world; angles in radians."""
    f0 = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    r = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    f = math.cos(pitch) * f0 + math.sin(pitch) * np.array([0.0, 0.0, 1.0])
    d = np.cross(f, r)
    r2 = math.cos(roll) * r + math.sin(roll) * d
    d2 = -math.sin(roll) * r + math.cos(roll) * d
    return np.stack([r2, d2, f], axis=1)


# ----------------------------------------------------------------------------- intersection

def _box_local(box: Box, ox, oy, oz, dx, dy, dz):
    """Ray in the box frame (centred, yaw removed)."""
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    px, py, pz = ox - box.center[0], oy - box.center[1], oz - box.center[2]
    if box.yaw == 0.0:
        return px, py, pz, dx, dy, dz
    return c * px + s * py, -s * px + c * py, pz, c * dx + s * dy, -s * dx + c * dy, dz


def _slab(half, o, d):
    """Per-axis entry/exit parameters; d == 0 handled by inf arithmetic."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = F32(1.0) / d
        ta = (-half - o) * inv
        tb = (half - o) * inv
    return np.minimum(ta, tb), np.maximum(ta, tb)


def intersect_box(box: Box, ox, oy, oz, dx, dy, dz):
    """(t, face) for rays vs a box; t = inf where missed. face = 2*axis + (normal positive)."""
    lx, ly, lz, ex, ey, ez = _box_local(box, ox, oy, oz, dx, dy, dz)
    hx, hy, hz = (F32(h) for h in box.half)
    n0, f0 = _slab(hx, lx, ex)
    n1, f1 = _slab(hy, ly, ey)
    n2, f2 = _slab(hz, lz, ez)
    if box.interior:
        t = np.minimum(np.minimum(f0, f1), f2)
        axis = np.where(f0 <= np.minimum(f1, f2), 0, np.where(f1 <= f2, 1, 2))
        dsel = np.choose(axis, [np.broadcast_to(ex, t.shape), np.broadcast_to(ey, t.shape),
                                np.broadcast_to(ez, t.shape)])
        face = 2 * axis + (dsel < 0)      # normal points back into the room
        t = np.where(np.isfinite(t) & (t > EPS), t, np.inf)
        return t.astype(F32), face.astype(np.int8)
    tn = np.maximum(np.maximum(n0, n1), n2)
    tf = np.minimum(np.minimum(f0, f1), f2)
    hit = (tn <= tf) & (tn > EPS)
    axis = np.where(n0 >= np.maximum(n1, n2), 0, np.where(n1 >= n2, 1, 2))
    dsel = np.choose(axis, [np.broadcast_to(ex, tn.shape), np.broadcast_to(ey, tn.shape),
                            np.broadcast_to(ez, tn.shape)])
    face = 2 * axis + (dsel < 0)
    return np.where(hit, tn, np.inf).astype(F32), face.astype(np.int8)


def intersect_sphere(sp: Sphere, ox, oy, oz, dx, dy, dz):
    px, py, pz = ox - sp.center[0], oy - sp.center[1], oz - sp.center[2]
    a = dx * dx + dy * dy + dz * dz
    b = px * dx + py * dy + pz * dz
    c = px * px + py * py + pz * pz - sp.radius ** 2
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    hit = (disc >= 0) & (t > EPS)
    return np.where(hit, t, np.inf).astype(F32), np.zeros(np.shape(t), np.int8)


def intersect_cylinder(cy: Cylinder, ox, oy, oz, dx, dy, dz):
    px, py = ox - cy.center[0], oy - cy.center[1]
    a = dx * dx + dy * dy
    b = px * dx + py * dy
    c = px * px + py * py - cy.radius ** 2
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = np.sqrt(np.maximum(disc, 0))
        t0 = np.where(disc >= 0, (-b - sq) / a, np.inf)
        t1 = np.where(disc >= 0, (-b + sq) / a, -np.inf)
        # vertical rays (a == 0) inside the radius: side never bounds them
        inside = (a == 0) & (c <= 0)
        t0 = np.where(inside, -np.inf, t0)
        t1 = np.where(inside, np.inf, t1)
        za = (cy.z0 - oz) / dz
        zb = (cy.z1 - oz) / dz
    zn, zf = np.minimum(za, zb), np.maximum(za, zb)
    zn = np.where(np.isnan(zn), -np.inf, zn)
    zf = np.where(np.isnan(zf), np.inf, zf)
    tn = np.maximum(t0, zn)
    tf = np.minimum(t1, zf)
    hit = (tn <= tf) & (tn > EPS)
    face = np.where(t0 >= zn, 0, np.where(dz < 0, 5, 4))
    return np.where(hit, tn, np.inf).astype(F32), face.astype(np.int8)


def _intersect(obj, ox, oy, oz, dx, dy, dz):
    if isinstance(obj, Box):
        return intersect_box(obj, ox, oy, oz, dx, dy, dz)
    if isinstance(obj, Sphere):
        return intersect_sphere(obj, ox, oy, oz, dx, dy, dz)
    return intersect_cylinder(obj, ox, oy, oz, dx, dy, dz)


def _bounds(obj) -> np.ndarray:
    """(8, 3) corners of a world-aligned bounding box, for screen-space culling."""
    if isinstance(obj, Box):
        c, s = math.cos(obj.yaw), math.sin(obj.yaw)
        hx = abs(c) * obj.half[0] + abs(s) * obj.half[1]
        hy = abs(s) * obj.half[0] + abs(c) * obj.half[1]
        lo = np.array(obj.center) - (hx, hy, obj.half[2])
        hi = np.array(obj.center) + (hx, hy, obj.half[2])
    elif isinstance(obj, Sphere):
        lo = np.array(obj.center) - obj.radius
        hi = np.array(obj.center) + obj.radius
    else:
        lo = np.array([obj.center[0] - obj.radius, obj.center[1] - obj.radius, obj.z0])
        hi = np.array([obj.center[0] + obj.radius, obj.center[1] + obj.radius, obj.z1])
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def _screen_rect(obj, cam: Camera) -> tuple[int, int, int, int] | None:
    """Pixel rectangle that contains the object's projection; None if off screen."""
    pc = (_bounds(obj) - np.asarray(cam.position)) @ cam.rotation
    if (pc[:, 2] > 0.02).all():
        k = cam.intr
        u = k.fx * pc[:, 0] / pc[:, 2] + k.cx
        v = k.fy * pc[:, 1] / pc[:, 2] + k.cy
        u0, u1 = max(int(math.floor(u.min())) - 1, 0), min(int(math.ceil(u.max())) + 2, k.width)
        v0, v1 = max(int(math.floor(v.min())) - 1, 0), min(int(math.ceil(v.max())) + 2, k.height)
        return (v0, v1, u0, u1) if (u0 < u1 and v0 < v1) else None
    if (pc[:, 2] <= 0).all():
        return None
    return 0, cam.intr.height, 0, cam.intr.width


# ----------------------------------------------------------------------------- textures

def _hash2(i: np.ndarray, j: np.ndarray, seed: float) -> np.ndarray:
    """Cheap integer hash of lattice cells to [0, 1)."""
    s = int(seed * 1e6) & 0xFFFF
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ (s * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 8) & 0xFFFF).astype(F32) / F32(65536.0)


def _value_noise(u: np.ndarray, v: np.ndarray, scale: float, seed: float) -> np.ndarray:
    """Bilinear lattice noise in [0, 1): smooth variation (paint, carpet)."""
    x, y = u / scale, v / scale
    i, j = np.floor(x), np.floor(y)
    fx, fy = x - i, y - j
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    a, b = _hash2(i, j, seed), _hash2(i + 1, j, seed)
    c, d = _hash2(i, j + 1, seed), _hash2(i + 1, j + 1, seed)
    return (a + (b - a) * fx) + ((c + (d - c) * fx) - (a + (b - a) * fx)) * fy


def albedo(m: Material, u: np.ndarray, v: np.ndarray, un: np.ndarray, vn: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB albedo for face coordinates u, v (metres) and un, vn (in [-1, 1])."""
    c1, c2 = np.asarray(m.c1, F32), np.asarray(m.c2, F32)
    k = m.kind
    if k == "plain" or k == "emissive":
        w = np.zeros_like(u)
    elif k == "paint":
        w = 0.5 * _value_noise(u, v, m.scale, m.phase) + 0.5 * _value_noise(u, v, m.scale * 0.23, m.phase + 1)
        w = (w - 0.5) * 0.25
    elif k == "wood":
        rings = np.sin((u + 0.04 * np.sin(v * 9.0 + m.phase)) * (2 * np.pi / (m.scale * 0.1)) + m.phase)
        w = 0.5 + 0.35 * rings + 0.15 * (_value_noise(u * 8, v, m.scale, m.phase) - 0.5)
    elif k == "checker":
        w = ((np.floor(u / m.scale) + np.floor(v / m.scale)) % 2).astype(F32)
    elif k == "tiles":
        w = 0.5 * _hash2(np.floor(u / m.scale), np.floor(v / m.scale), m.phase)
        fu, fv = (u / m.scale) % 1.0, (v / m.scale) % 1.0
        grout = (np.minimum(fu, 1 - fu) < 0.03) | (np.minimum(fv, 1 - fv) < 0.03)
        w = np.where(grout, 1.0, w * 0.4).astype(F32)
    elif k == "stripes":
        w = (((u + m.phase) / m.scale) % 1.0 < 0.5).astype(F32)
    elif k == "carpet":
        w = 0.6 * _hash2(np.floor(u / 0.006), np.floor(v / 0.006), m.phase) \
            + 0.4 * _value_noise(u, v, m.scale, m.phase)
    elif k == "books":
        col = np.floor((u + m.phase) / m.scale)
        h = _hash2(col, np.zeros_like(col), m.phase)
        shelf = ((v + 1.0) / 0.35) % 1.0 < 0.08
        rgb = np.stack([h, _hash2(col, col, 1.3), _hash2(col + 7, col, 2.1)], axis=-1) * 0.8 + 0.1
        rgb = np.where(shelf[:, None], c2, rgb)
        return rgb.astype(F32)
    elif k == "picture":
        rgb = np.broadcast_to(c1, (u.size, 3)).astype(F32).copy()
        for bu, bv, br, bc in m.blobs:
            g = np.exp(-((un - bu) ** 2 + (vn - bv) ** 2) / (br * br))[:, None]
            rgb = rgb * (1 - g) + np.asarray(bc, F32) * g
        frame = (np.abs(un) > 0.94) | (np.abs(vn) > 0.92)
        return np.where(frame[:, None], c2, rgb).astype(F32)
    else:
        raise InputError(f"unknown material kind {k!r}")
    w = w.astype(F32)[:, None]
    if k in ("paint",):
        return np.clip(c1 * (1 + w), 0, 1)
    return c1 * (1 - w) + c2 * w


# ----------------------------------------------------------------------------- rendering

def _rays(cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = cam.intr
    u = (np.arange(k.width, dtype=F32) - F32(k.cx)) / F32(k.fx)
    v = (np.arange(k.height, dtype=F32) - F32(k.cy)) / F32(k.fy)
    uu, vv = np.meshgrid(u, v)
    R = cam.rotation.astype(F32)
    return (R[0, 0] * uu + R[0, 1] * vv + R[0, 2], R[1, 0] * uu + R[1, 1] * vv + R[1, 2],
            R[2, 0] * uu + R[2, 1] * vv + R[2, 2])


def _face_frame(obj, face: np.ndarray, lx, ly, lz):
    """Local normal (3 arrays) and face coordinates (u, v metres; un, vn in [-1, 1])."""
    n = face.shape[0]
    if isinstance(obj, Sphere):
        r = obj.radius
        nx, ny, nz = lx / r, ly / r, lz / r
        u = np.arctan2(ly, lx) * r
        return (nx, ny, nz), (u, lz, u / (np.pi * r), lz / r)
    if isinstance(obj, Cylinder):
        side = face == 0
        nx = np.where(side, lx / obj.radius, 0)
        ny = np.where(side, ly / obj.radius, 0)
        nz = np.where(side, 0, np.where(face == 5, 1, -1))
        ang = np.arctan2(ly, lx) * obj.radius
        u = np.where(side, ang, lx)
        v = np.where(side, lz, ly)
        return (nx, ny, nz), (u, v, u / (np.pi * obj.radius), v / max(obj.z1 - obj.z0, 1e-3))
    axis = face // 2
    sign = np.where(face % 2 == 1, 1, -1).astype(F32)
    nx = np.where(axis == 0, sign, 0).astype(F32)
    ny = np.where(axis == 1, sign, 0).astype(F32)
    nz = np.where(axis == 2, sign, 0).astype(F32)
    hx, hy, hz = obj.half
    u = np.where(axis == 0, ly, lx)
    v = np.where(axis == 2, ly, lz)
    hu = np.where(axis == 0, hy, hx)
    hv = np.where(axis == 2, hy, hz)
    del n
    return (nx, ny, nz), (u, v, u / hu, v / hv)


def _shadow(scene: Scene, px, py, pz, light: Light, occluders: list) -> np.ndarray:
    """1 where the light is visible from the points, 0 where a box blocks it."""
    vis = np.ones(px.shape, F32)
    dx, dy, dz = light.pos[0] - px, light.pos[1] - py, light.pos[2] - pz
    for ob in occluders:
        t, _ = _intersect(ob, px, py, pz, dx, dy, dz)
        vis[(t > 1e-3) & (t < 1.0)] = 0.0
    return vis


def render_scene(scene: Scene, cam: Camera, shadow_step: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Linear radiance (H, W, 3) float32 and exact depth (H, W) float32 metres.

    Shadows are traced every ``shadow_step`` pixels and smoothed up, which also
    softens their edges like an area light would.
    """
    H, W = cam.intr.height, cam.intr.width
    if H <= 0 or W <= 0 or H * W > MAX_RENDER_PIXELS:
        raise InputError(f"render size {H}x{W} is out of range (1..{MAX_RENDER_PIXELS} pixels)")
    ox, oy, oz = (F32(p) for p in cam.position)
    dx, dy, dz = _rays(cam)
    depth, room_face = intersect_box(scene.room, ox, oy, oz, dx, dy, dz)
    ident = np.zeros((H, W), np.int16)     # 0 = room, k + 1 = objects[k], -(j + 1) = corridor j
    face = room_face
    # doorways: rays whose room hit falls inside an opening continue into the corridor
    for j, op in enumerate(scene.openings):
        px, py, pz = ox + depth * dx, oy + depth * dy, oz + depth * dz
        along = py if op.face < 2 else px
        m = (room_face == op.face) & (along >= op.u0) & (along <= op.u1) & (pz >= op.z0) & (pz <= op.z1)
        if m.any():
            t2, f2 = intersect_box(op.corridor, ox, oy, oz, dx[m], dy[m], dz[m])
            depth[m] = t2
            face[m] = f2
            ident[m] = -(j + 1)
    for k, ob in enumerate(scene.objects):
        rect = _screen_rect(ob, cam)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        t, f = _intersect(ob, ox, oy, oz, dx[v0:v1, u0:u1], dy[v0:v1, u0:u1], dz[v0:v1, u0:u1])
        sub = depth[v0:v1, u0:u1]
        closer = t < sub
        sub[closer] = t[closer]
        face[v0:v1, u0:u1][closer] = f[closer]
        ident[v0:v1, u0:u1][closer] = k + 1

    px, py, pz = ox + depth * dx, oy + depth * dy, oz + depth * dz
    alb = np.zeros((H, W, 3), F32)
    nrm = np.zeros((H, W, 3), F32)
    emit = np.zeros((H, W), F32)
    gloss = np.zeros((H, W), F32)
    owners = [(0, scene.room)] + [(-(j + 1), op.corridor) for j, op in enumerate(scene.openings)] \
        + [(k + 1, ob) for k, ob in enumerate(scene.objects)]
    for key, ob in owners:
        idx = np.nonzero(ident == key)
        if idx[0].size == 0:
            continue
        fc = face[idx]
        if isinstance(ob, Box):
            lx, ly, lz, _, _, _ = _box_local(ob, px[idx], py[idx], pz[idx], F32(0), F32(0), F32(0))
        elif isinstance(ob, Sphere):
            lx, ly, lz = px[idx] - ob.center[0], py[idx] - ob.center[1], pz[idx] - ob.center[2]
        else:
            lx, ly, lz = px[idx] - ob.center[0], py[idx] - ob.center[1], pz[idx] - 0.5 * (ob.z0 + ob.z1)
        (nx, ny, nz), (u, v, un, vn) = _face_frame(ob, fc, lx, ly, lz)
        if isinstance(ob, Box) and ob.yaw != 0.0:
            c, s = math.cos(ob.yaw), math.sin(ob.yaw)
            nx, ny = c * nx - s * ny, s * nx + c * ny
        nrm[idx] = np.stack([nx, ny, nz], axis=-1)
        mats = ob.materials
        if len(mats) == 1:
            groups = [(mats[0], np.ones(fc.shape, bool))]
        else:
            groups = [(mats[fi], fc == fi) for fi in np.unique(fc)]
        for mat, sel in groups:
            rows, cols = idx[0][sel], idx[1][sel]
            alb[rows, cols] = albedo(mat, u[sel], v[sel], un[sel], vn[sel])
            emit[rows, cols] = mat.emission
            gloss[rows, cols] = mat.glossy

    lin_alb = alb ** F32(2.2)
    radiance = lin_alb * np.asarray(scene.ambient, F32)
    # ambient occlusion-ish darkening near the floor/ceiling corners is skipped; cheap sky term:
    radiance *= (0.85 + 0.15 * np.clip(nrm[..., 2:3] * 0.5 + 0.5, 0, 1))
    occluders = [ob for ob in scene.objects if ob.casts_shadow]
    s = max(int(shadow_step), 1)
    for li, L in enumerate(scene.lights):
        lx, ly, lz = L.pos[0] - px, L.pos[1] - py, L.pos[2] - pz
        d2 = lx * lx + ly * ly + lz * lz
        inv = 1.0 / np.sqrt(d2)
        ndl = np.clip((nrm[..., 0] * lx + nrm[..., 1] * ly + nrm[..., 2] * lz) * inv, 0, 1)
        shade = ndl * L.power / (1.0 + d2)
        if L.shadows and occluders:
            vis = _shadow(scene, px[::s, ::s], py[::s, ::s], pz[::s, ::s], L, occluders)
            if s > 1:
                vis = cv2.resize(vis, (W, H), interpolation=cv2.INTER_LINEAR)
                vis = cv2.blur(vis, (3, 3))
            shade = shade * vis
        radiance += lin_alb * (shade[..., None] * np.asarray(L.color, F32))
        if li == 0 and gloss.any():
            # Blinn-Phong highlight from the main light only
            vn_ = np.sqrt(dx * dx + dy * dy + dz * dz)
            hx, hy, hz = lx * inv - dx / vn_, ly * inv - dy / vn_, lz * inv - dz / vn_
            hn = np.sqrt(hx * hx + hy * hy + hz * hz) + 1e-6
            ndh = np.clip((nrm[..., 0] * hx + nrm[..., 1] * hy + nrm[..., 2] * hz) / hn, 0, 1)
            radiance += (gloss * ndh ** 40 * shade)[..., None] * np.asarray(L.color, F32)
    radiance = np.where(emit[..., None] > 0, lin_alb * emit[..., None], radiance)
    return radiance.astype(F32), depth.astype(F32)


# ----------------------------------------------------------------------------- scene sampling

PALETTE_WALL = [(0.92, 0.91, 0.88), (0.85, 0.86, 0.84), (0.80, 0.78, 0.72), (0.70, 0.76, 0.80),
                (0.88, 0.82, 0.70), (0.62, 0.66, 0.60), (0.95, 0.95, 0.95), (0.55, 0.58, 0.66)]
PALETTE_WOOD = [((0.62, 0.42, 0.25), (0.45, 0.28, 0.15)), ((0.80, 0.65, 0.45), (0.65, 0.48, 0.30)),
                ((0.40, 0.26, 0.16), (0.28, 0.17, 0.10)), ((0.85, 0.75, 0.60), (0.72, 0.60, 0.45))]


def _rand_color(rng: np.random.Generator, lo: float = 0.1, hi: float = 0.9) -> tuple[float, float, float]:
    base = rng.uniform(lo, hi)
    tint = rng.normal(0, 0.12, 3)
    return tuple(float(x) for x in np.clip(base + tint, 0.02, 0.98))


def _material(rng: np.random.Generator, role: str) -> Material:
    ph = float(rng.uniform(0, 100))
    if role == "wall":
        c = np.array(PALETTE_WALL[rng.integers(len(PALETTE_WALL))]) * rng.uniform(0.8, 1.05) \
            + rng.normal(0, 0.03, 3)
        c = tuple(float(x) for x in np.clip(c, 0, 1))
        kind = rng.choice(["paint", "paint", "paint", "stripes", "plain"], p=[0.4, 0.2, 0.2, 0.1, 0.1])
        c2 = tuple(float(x) for x in np.clip(np.array(c) * rng.uniform(0.8, 0.95), 0, 1))
        return Material(str(kind), c, c2, float(rng.uniform(0.8, 3.0) if kind == "paint" else rng.uniform(0.1, 0.5)), ph)
    if role == "floor":
        kind = str(rng.choice(["wood", "tiles", "carpet", "checker", "plain"], p=[0.3, 0.25, 0.3, 0.05, 0.1]))
        if kind == "wood":
            c1, c2 = PALETTE_WOOD[rng.integers(len(PALETTE_WOOD))]
            return Material(kind, c1, c2, float(rng.uniform(0.5, 2.0)), ph, glossy=float(rng.uniform(0, 0.5)))
        if kind == "carpet":
            c1 = _rand_color(rng, 0.2, 0.6)
            c2 = tuple(float(x) for x in np.clip(np.array(c1) * 0.6, 0, 1))
            return Material(kind, c1, c2, float(rng.uniform(0.2, 1.0)), ph)
        c1 = _rand_color(rng, 0.4, 0.9)
        return Material(kind, c1, _rand_color(rng, 0.1, 0.6), float(rng.uniform(0.25, 0.8)), ph,
                        glossy=float(rng.uniform(0, 0.6)))
    if role == "ceiling":
        c = float(rng.uniform(0.8, 0.97))
        kind = str(rng.choice(["paint", "tiles"], p=[0.6, 0.4]))
        return Material(kind, (c, c, c * 0.98), (c * 0.8, c * 0.8, c * 0.8), float(rng.uniform(0.5, 1.2)), ph)
    if role == "wood":
        c1, c2 = PALETTE_WOOD[rng.integers(len(PALETTE_WOOD))]
        return Material("wood", c1, c2, float(rng.uniform(0.5, 2.0)), ph, glossy=float(rng.uniform(0, 0.4)))
    if role == "metal":
        g = float(rng.uniform(0.2, 0.8))
        return Material("plain", (g, g, g * 1.02), (g, g, g), 1.0, ph, glossy=float(rng.uniform(0.3, 1.0)))
    if role == "fabric":
        c1 = _rand_color(rng, 0.15, 0.7)
        kind = str(rng.choice(["carpet", "plain", "stripes", "checker"], p=[0.5, 0.3, 0.1, 0.1]))
        return Material(kind, c1, tuple(float(x) for x in np.clip(np.array(c1) * 0.7, 0, 1)),
                        float(rng.uniform(0.05, 0.4)), ph)
    if role == "picture":
        blobs = tuple((float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1)), float(rng.uniform(0.15, 0.8)),
                       _rand_color(rng, 0.05, 0.95)) for _ in range(int(rng.integers(2, 7))))
        return Material("picture", _rand_color(rng, 0.1, 0.95), _rand_color(rng, 0.0, 0.3), 1.0, ph, blobs=blobs)
    if role == "books":
        return Material("books", (0.5, 0.5, 0.5), PALETTE_WOOD[rng.integers(4)][0], float(rng.uniform(0.025, 0.06)), ph)
    # generic clutter / furniture paint
    kind = str(rng.choice(["plain", "plain", "stripes", "checker", "paint", "wood"]))
    return Material(kind, _rand_color(rng), _rand_color(rng), float(rng.uniform(0.03, 0.3)), ph,
                    glossy=float(rng.uniform(0, 0.8)))


def _rot(yaw: float, x: float, y: float) -> tuple[float, float]:
    c, s = math.cos(yaw), math.sin(yaw)
    return c * x - s * y, s * x + c * y


def _far_from(cam_xy: np.ndarray, cxy: tuple[float, float], radius: float, margin: float = 0.35) -> bool:
    return float(np.hypot(cam_xy[0] - cxy[0], cam_xy[1] - cxy[1])) > radius + margin


def sample_scene(rng: np.random.Generator, height: int, width: int,
                 close_fraction: float = 0.0) -> tuple[Scene, Camera]:
    """A random furnished room and a camera inside it, outside every object.

    close_fraction: the share of frames looking at something 0.5-2 m away from above (a
    table top with its clutter, a cabinet, things on the floor), as hand-held photos and
    manipulators do, instead of across the room; drawn after everything else, so 0 gives
    exactly the scenes of earlier versions.
    """
    # metric statistics of real indoor spaces: floor sides log-uniform 2.5-10 m (most rooms
    # are 3-6 m), ceilings 2.4-3.4 m
    Lx, Ly = (float(np.exp(rng.uniform(math.log(2.5), math.log(10.0)))) for _ in range(2))
    Lz = rng.uniform(2.4, 3.4)
    wall = _material(rng, "wall")
    wall2 = _material(rng, "wall") if rng.random() < 0.3 else wall
    mats = [wall, wall2, wall, wall2, _material(rng, "ceiling"), _material(rng, "floor")]
    room = Box((Lx / 2, Ly / 2, Lz / 2), (Lx / 2, Ly / 2, Lz / 2), mats, interior=True)
    scene = Scene(room)

    # camera first, so furniture can keep clear of it
    cam_xy = np.array([rng.uniform(0.4, Lx - 0.4), rng.uniform(0.4, Ly - 0.4)])
    # half robot-mounted (0.15-0.9 m, near level), half hand-held or head-worn (1.0-1.8 m,
    # looking down more often)
    robot = rng.random() < 0.5
    cam_z = rng.uniform(0.15, 0.9) if robot else rng.uniform(1.0, 1.8)
    # look across the room, as people and robots mostly do: towards the farthest of three
    # random floor points, give or take 25 degrees (a uniform yaw stares at a near wall half
    # the time, which teaches nothing about scale)
    targets = np.stack([rng.uniform(0, Lx, 3), rng.uniform(0, Ly, 3)], axis=1)
    far = targets[int(np.argmax(np.linalg.norm(targets - cam_xy, axis=1)))]
    yaw = math.atan2(far[1] - cam_xy[1], far[0] - cam_xy[0]) + math.radians(rng.uniform(-25, 25))
    pitch = math.radians(rng.uniform(-15, 10) if robot else rng.uniform(-35, 8))
    roll = math.radians(rng.normal(0, 3))

    def wall_item(w: float, d: float, h: float, z0: float, mat, depth_in: float = 0.0,
                  shadow: bool = True) -> Box | None:
        side = int(rng.integers(4))
        length = Ly if side < 2 else Lx
        if w > length - 0.2:
            return None
        a = rng.uniform(w / 2 + 0.05, length - w / 2 - 0.05)
        off = d / 2 - depth_in
        if side == 0:
            c, hxy = (off, a), (d / 2, w / 2)
        elif side == 1:
            c, hxy = (Lx - off, a), (d / 2, w / 2)
        elif side == 2:
            c, hxy = (a, off), (w / 2, d / 2)
        else:
            c, hxy = (a, Ly - off), (w / 2, d / 2)
        if d > 0.1 and not _far_from(cam_xy, c, math.hypot(*hxy)):
            return None
        return Box((c[0], c[1], z0 + h / 2), (hxy[0], hxy[1], h / 2), [mat], casts_shadow=shadow)

    objs: list = []
    area = Lx * Ly
    # along the walls: cabinets, shelves, sofas/beds, doors, windows, posters
    for _ in range(int(rng.integers(2, 5 + int(area / 12)))):
        kind = rng.choice(["cabinet", "shelf", "sofa", "desk_wall"], p=[0.35, 0.25, 0.2, 0.2])
        if kind == "cabinet":
            b = wall_item(rng.uniform(0.4, 1.4), rng.uniform(0.3, 0.6), rng.uniform(0.5, 2.1), 0.0,
                          _material(rng, str(rng.choice(["wood", "metal", "generic"]))))
        elif kind == "shelf":
            b = wall_item(rng.uniform(0.6, 1.8), rng.uniform(0.25, 0.4), rng.uniform(1.0, 2.2), 0.0,
                          _material(rng, "books"))
        elif kind == "sofa":
            b = wall_item(rng.uniform(1.4, 2.2), rng.uniform(0.8, 1.6), rng.uniform(0.35, 0.55), 0.0,
                          _material(rng, "fabric"))
        else:
            b = wall_item(rng.uniform(0.9, 1.8), rng.uniform(0.5, 0.8), 0.04, rng.uniform(0.7, 0.76),
                          _material(rng, "wood"))
        if b is not None:
            objs.append(b)
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.5:
            b = wall_item(rng.uniform(0.3, 1.4), 0.012, rng.uniform(0.3, 1.0), rng.uniform(0.9, 1.6),
                          _material(rng, "picture"), shadow=False)
        else:  # door, slightly proud of the wall
            b = wall_item(rng.uniform(0.8, 1.0), 0.04, min(2.05, Lz - 0.1), 0.0, _material(rng, "wood"),
                          depth_in=0.02, shadow=False)
        if b is not None:
            objs.append(b)
    if rng.random() < 0.5:  # window: a bright, emissive inset
        wm = Material("emissive", tuple(float(x) for x in np.clip(rng.uniform(0.8, 1.0, 3), 0, 1)),
                      emission=float(rng.uniform(1.5, 4.0)))
        b = wall_item(rng.uniform(0.8, 2.0), 0.02, rng.uniform(0.8, 1.4), rng.uniform(0.8, 1.1), wm,
                      shadow=False)
        if b is not None:
            objs.append(b)
    # free-standing tables (top + legs), chairs, boxes; yaw-rotated
    tops: list[tuple[float, float, float, float, float]] = []
    for _ in range(int(rng.integers(0, 3 + int(area / 15)))):
        w, d = rng.uniform(0.6, 2.0), rng.uniform(0.5, 1.0)
        h = rng.uniform(0.4, 0.8) if rng.random() < 0.7 else rng.uniform(0.9, 1.1)
        c = (rng.uniform(w / 2 + 0.1, max(Lx - w / 2 - 0.1, w / 2 + 0.11)),
             rng.uniform(d / 2 + 0.1, max(Ly - d / 2 - 0.1, d / 2 + 0.11)))
        if not _far_from(cam_xy, c, math.hypot(w, d) / 2):
            continue
        tyaw = float(rng.uniform(-math.pi, math.pi)) if rng.random() < 0.5 else 0.0
        tm = _material(rng, str(rng.choice(["wood", "generic", "metal"])))
        objs.append(Box((c[0], c[1], h - 0.02), (w / 2, d / 2, 0.02), [tm], yaw=tyaw))
        lm = _material(rng, "metal")
        lw = rng.uniform(0.02, 0.05)
        for sx in (-1, 1):
            for sy in (-1, 1):
                ox, oy = _rot(tyaw, sx * (w / 2 - 0.06), sy * (d / 2 - 0.06))
                objs.append(Box((c[0] + ox, c[1] + oy, (h - 0.04) / 2), (lw, lw, (h - 0.04) / 2), [lm],
                                yaw=tyaw, casts_shadow=False))
        tops.append((c[0], c[1], h, min(w, d) / 2, tyaw))
    # clutter on the floor and on tables
    for _ in range(int(rng.integers(2, 10))):
        if tops and rng.random() < 0.5:
            tx, ty, tz, r, _ = tops[int(rng.integers(len(tops)))]
            x, y, z0 = tx + rng.uniform(-r, r), ty + rng.uniform(-r, r), tz
            s = rng.uniform(0.04, 0.18)
        else:
            x, y, z0 = rng.uniform(0.2, Lx - 0.2), rng.uniform(0.2, Ly - 0.2), 0.0
            s = rng.uniform(0.08, 0.4)
        if not _far_from(cam_xy, (x, y), s, 0.25):
            continue
        m = _material(rng, "generic")
        shape = rng.choice(["box", "sphere", "cylinder"], p=[0.5, 0.2, 0.3])
        if shape == "box":
            hz = s * rng.uniform(0.4, 1.5)
            objs.append(Box((x, y, z0 + hz), (s, s * rng.uniform(0.5, 1.2), hz), [m],
                            yaw=float(rng.uniform(-math.pi, math.pi))))
        elif shape == "sphere":
            objs.append(Sphere((x, y, z0 + s), s, [m]))
        else:
            objs.append(Cylinder((x, y), s * rng.uniform(0.4, 1.0), z0, z0 + s * rng.uniform(1, 4), [m]))
    # ceiling light panels (emissive) with a point light just below each
    lights: list[Light] = []
    for i in range(int(rng.integers(1, 4))):
        lx_, ly_ = rng.uniform(0.5, Lx - 0.5), rng.uniform(0.5, Ly - 0.5)
        warm = rng.uniform(-0.15, 0.15)
        col = (1.0 + warm, 1.0, 1.0 - warm)
        objs.append(Box((lx_, ly_, Lz - 0.01), (0.3, 0.3, 0.01),
                        [Material("emissive", (1.0, 0.98, 0.95), emission=float(rng.uniform(2.0, 5.0)))],
                        casts_shadow=False))
        power = rng.uniform(3.0, 12.0) * (Lz / 3.0) ** 2
        lights.append(Light((lx_, ly_, Lz - 0.15), col, float(power), shadows=(i == 0)))
    scene.objects = objs
    scene.lights = lights
    amb = rng.uniform(0.15, 0.45)
    scene.ambient = tuple(float(amb * x) for x in (1.0 + rng.normal(0, 0.05, 3)))

    if rng.random() < 0.35:  # a doorway into a corridor: far depth
        side = int(rng.integers(4))
        length_w = Ly if side < 2 else Lx
        ow = rng.uniform(0.9, min(2.5, length_w - 0.4))
        a0 = rng.uniform(0.2, length_w - ow - 0.2)
        oz1 = min(rng.uniform(2.0, Lz), Lz)
        clen, cw = rng.uniform(3.0, 9.0), ow + rng.uniform(0.0, 1.5)
        ch = rng.uniform(oz1, Lz + 0.3)
        cmid = a0 + ow / 2
        cm = [_material(rng, "wall")] * 4 + [_material(rng, "ceiling"), _material(rng, "floor")]
        if side == 0:
            cc, chalf = (-clen / 2, cmid), (clen / 2, cw / 2)
        elif side == 1:
            cc, chalf = (Lx + clen / 2, cmid), (clen / 2, cw / 2)
        elif side == 2:
            cc, chalf = (cmid, -clen / 2), (cw / 2, clen / 2)
        else:
            cc, chalf = (cmid, Ly + clen / 2), (cw / 2, clen / 2)
        corridor = Box((cc[0], cc[1], ch / 2), (chalf[0], chalf[1], ch / 2), cm, interior=True)
        # room face index: x- wall is face 1 (inward normal +x), x+ is 0, y- is 3, y+ is 2
        face = {0: 1, 1: 0, 2: 3, 3: 2}[side]
        scene.openings.append(Opening(face, a0, a0 + ow, 0.0, oz1, corridor))
        if rng.random() < 0.7:
            scene.lights.append(Light((cc[0], cc[1], ch - 0.15), (1, 1, 1), float(rng.uniform(2, 8)), False))

    # intrinsics: horizontal field of view 50-85 degrees, as webcams, RealSense/OAK colour
    # and robot cameras have (fx 175-343 px at 320 px width), scaled to the requested size
    fx = 0.5 * width / math.tan(0.5 * math.radians(rng.uniform(50.0, 85.0)))
    fy = fx * (1 + rng.uniform(-0.02, 0.02)) * 1.0
    cx = (width - 1) / 2 + rng.uniform(-0.04, 0.04) * width
    cy = (height - 1) / 2 + rng.uniform(-0.04, 0.04) * height
    position = (float(cam_xy[0]), float(cam_xy[1]), float(cam_z))
    if close_fraction > 0 and rng.random() < close_fraction:
        placed = _close_view(rng, scene, tops, Lx, Ly, Lz)
        if placed is not None:
            position, yaw, pitch = placed
    cam = Camera(position, camera_rotation(yaw, pitch, roll), Intrinsics(float(fx), float(fy), float(cx), float(cy),
                                                                           width, height))
    return scene, cam


def _close_view(rng: np.random.Generator, scene: Scene, tops: list, Lx: float, Ly: float,
                Lz: float) -> tuple[tuple[float, float, float], float, float] | None:
    """A camera 0.5-2 m from a target (a table top, else an object or a floor spot), above it
    and looking down at it: (position, yaw, pitch), or None when no free spot was found."""
    for _ in range(12):
        if tops and rng.random() < 0.6:
            tx, ty, tz, r, _ = tops[int(rng.integers(len(tops)))]
            target = np.array([tx + rng.uniform(-r, r), ty + rng.uniform(-r, r), tz])
        elif scene.objects and rng.random() < 0.7:
            obj = scene.objects[int(rng.integers(len(scene.objects)))]
            corners = _bounds(obj)
            target = 0.5 * (corners.min(axis=0) + corners.max(axis=0))
            target[2] = corners[:, 2].max()                 # its top, where the camera looks from above
        else:
            target = np.array([rng.uniform(0.5, Lx - 0.5), rng.uniform(0.5, Ly - 0.5), 0.0])
        dist = float(np.exp(rng.uniform(math.log(0.5), math.log(2.0))))
        down = math.radians(rng.uniform(20.0, 60.0))        # the line of sight's angle below level
        heading = rng.uniform(-math.pi, math.pi)
        back = np.array([math.cos(heading), math.sin(heading)]) * dist * math.cos(down)
        pos = np.array([target[0] - back[0], target[1] - back[1], target[2] + dist * math.sin(down)])
        if not (0.25 < pos[0] < Lx - 0.25 and 0.25 < pos[1] < Ly - 0.25 and 0.2 < pos[2] < Lz - 0.2):
            continue
        if any(_inside(o, pos) for o in scene.objects):
            continue
        yaw = heading + math.radians(rng.uniform(-8, 8))
        pitch = -down + math.radians(rng.uniform(-8, 8))
        return (float(pos[0]), float(pos[1]), float(pos[2])), yaw, pitch
    return None


def _inside(obj, p: np.ndarray, margin: float = 0.15) -> bool:
    """Whether point p is within ``margin`` of an object's bounding box."""
    corners = _bounds(obj)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    return bool(np.all(p > lo - margin) and np.all(p < hi + margin))


def camera_effects(radiance: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Auto-exposure, white balance, vignetting, blur, noise, JPEG: linear -> sRGB uint8."""
    H, W, _ = radiance.shape
    lum = radiance.mean(axis=2)
    key = float(np.percentile(lum[::4, ::4], 70)) + 1e-6
    img = radiance * (rng.uniform(0.35, 0.75) / key)
    img = img * (1.0 + rng.normal(0, 0.06, 3)).astype(F32)                 # white balance
    yy, xx = np.mgrid[0:H, 0:W].astype(F32)
    r2 = ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / F32((W / 2) ** 2 + (H / 2) ** 2)
    img = img * (1 - rng.uniform(0.0, 0.45) * r2)[..., None]               # vignetting
    img = img / (1 + img * rng.uniform(0.0, 0.3))                          # soft highlight roll-off
    img = np.clip(img, 0, 1) ** F32(1 / 2.2)
    sigma = rng.uniform(0.3, 1.0)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0, rng.uniform(0.003, 0.02), img.shape).astype(F32)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    q = int(rng.integers(55, 96))
    ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    if ok:
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


def render(seed: int, height: int = 256, width: int = 320, close_fraction: float = 0.0) -> Sample:
    """One synthetic frame, fully determined by ``seed`` (and ``close_fraction``, see sample_scene)."""
    check_render_size(height, width)
    rng = np.random.default_rng(seed)
    scene, cam = sample_scene(rng, height, width, close_fraction)
    radiance, depth = render_scene(scene, cam)
    rgb = camera_effects(radiance, rng)
    depth = np.where(np.isfinite(depth), depth, 0).astype(F32)
    return Sample(rgb, depth, cam.intr, name=f"synth_{seed:08d}")


# ----------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output folder (manifest format)")
    p.add_argument("--count", required=True, type=int, help="number of frames")
    p.add_argument("--seed", type=int, default=0, help="frame i uses seed + i")
    p.add_argument("--height", type=int, default=256, help="image height in pixels (default: 256)")
    p.add_argument("--width", type=int, default=320, help="image width in pixels (default: 320)")
    p.add_argument("--workers", type=int, default=2, help="processes")
    p.add_argument("--preview", type=int, default=8, help="frames in preview.png (0: none)")
    p.add_argument("--trajectory", action="store_true",
                   help="one scene (--seed) seen along a smooth camera path of --count frames, with "
                        "poses.txt (camera-to-world), for self-supervised training")
    p.add_argument("--step", type=float, default=0.08, help="trajectory: metres the camera moves per frame")
    p.add_argument("--close-fraction", type=float, default=0.0,
                   help="share of frames looking down at something 0.5-2 m away (table tops, objects) "
                        "instead of across the room, 0..1")


def _render_one(job: tuple[int, int, int, str, float]) -> dict:
    from reflector_ros.data.manifest import save_frame
    seed, h, w, out, close = job
    return save_frame(Path(out), render(seed, h, w, close), f"{seed:08d}", existing_ok=True)


def folder_conflict(out: Path, generator: dict) -> str | None:
    """Why ``out`` cannot take this run's frames, or None. A folder holds one kind of set at
    one size: a rooms run resumes only into rooms of the same size and close fraction (its
    frames are named by seed), and a trajectory is never mixed with anything else. Folders
    from before the settings were recorded are judged by their frames' size and poses.txt."""
    manifest = out / "manifest.json"
    if not manifest.is_file():
        if (out / "poses.txt").exists() or any((out / d).is_dir() and any((out / d).iterdir()) for d in ("rgb", "depth")):
            return f"{out} holds frames but no manifest.json; give a new --out or empty it"
        return None
    try:
        doc = json.loads(manifest.read_text())
        frames = doc.get("frames") or []
    except (OSError, ValueError, AttributeError) as exc:
        return f"{out}/manifest.json is unreadable ({exc}); give a new --out or empty it"
    had = doc.get("generator")
    if had is None:   # an older folder: its size and whether it is a trajectory
        had = {"kind": "trajectory" if (out / "poses.txt").exists() else "rooms"}
        if frames:
            had.update(height=frames[0].get("height"), width=frames[0].get("width"))
    keys = ("kind", "height", "width", "close_fraction") if generator["kind"] == "rooms" else tuple(generator)
    differ = [k for k in keys if k in had and had[k] != generator[k]]
    if differ:
        said = ", ".join(f"{k} {had[k]} (this run: {generator[k]})" for k in differ)
        return f"{out} was made with other settings: {said}; give a new --out, or the same settings to add frames"
    return None


def run(args: argparse.Namespace) -> int:
    import multiprocessing as mp

    from tqdm import tqdm

    from reflector_ros.data.manifest import frame_entry, frame_paths, write_manifest_frames

    if args.count <= 0 or args.count > 10_000_000:
        print(f"reflector synth: --count must be in 1..10000000, got {args.count}")
        return 2
    if not (8 <= args.height <= MAX_RENDER_SIDE and 8 <= args.width <= MAX_RENDER_SIDE):
        print(f"reflector synth: --height/--width must be within 8..{MAX_RENDER_SIDE}, got {args.height}x{args.width}")
        return 2
    out: Path = args.out
    if not 0.0 <= args.close_fraction <= 1.0:
        print(f"reflector synth: --close-fraction must be in [0, 1], got {args.close_fraction}")
        return 2
    generator = ({"kind": "trajectory", "seed": args.seed, "count": args.count, "height": args.height,
                  "width": args.width, "step": args.step} if args.trajectory else
                 {"kind": "rooms", "height": args.height, "width": args.width, "close_fraction": args.close_fraction})
    conflict = folder_conflict(out, generator)
    if conflict:
        print(f"reflector synth: {conflict}")
        return 2
    if args.trajectory:
        try:
            path = write_trajectory(out, args.seed, args.count, args.height, args.width, args.step)
        except InputError as exc:
            print(f"reflector synth: {exc}")
            return 2
        print(f"reflector synth: trajectory of {args.count} frames in {path}, poses in {out / 'poses.txt'}")
        return 0
    (out / "rgb").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    jobs = [(args.seed + i, args.height, args.width, str(out), args.close_fraction) for i in range(args.count)]
    todo = [j for j in jobs if not all(p.exists() for p in frame_paths(out, f"{j[0]:08d}", abs_=True))]
    print(f"reflector synth: {len(jobs) - len(todo)} frames present, rendering {len(todo)} into {out}")
    workers = max(1, int(args.workers))
    if todo:
        if workers == 1:
            for j in tqdm(todo, desc="synth", unit="frame"):
                _render_one(j)
        else:
            with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
                for _ in tqdm(pool.imap_unordered(_render_one, todo, chunksize=4), total=len(todo),
                              desc="synth", unit="frame"):
                    pass
    # the manifest lists every frame; intrinsics come from re-sampling the scene (cheap)
    frames = []
    for seed, h, w, _, close in tqdm(jobs, desc="manifest", unit="frame", leave=False):
        rng = np.random.default_rng(seed)
        _, cam = sample_scene(rng, h, w, close)
        rgb_rel, depth_rel = frame_paths(out, f"{seed:08d}")
        frames.append({**frame_entry(rgb_rel, depth_rel, cam.intr), "source": f"reflector synth seed {seed}"})
    write_manifest_frames(out, frames, name=f"reflector synthetic indoor, seeds {args.seed}..{args.seed + args.count - 1}",
                          generator=generator)
    if args.preview > 0:
        write_preview(out / "preview.png", [render(args.seed + i, args.height, args.width, args.close_fraction)
                                            for i in range(min(args.preview, args.count))])
        print(f"reflector synth: preview at {out / 'preview.png'}")
    print(f"reflector synth: {len(frames)} frames in {out / 'manifest.json'}")
    return 0


def _worker_init() -> None:
    cv2.setNumThreads(1)


def colorize_depth(depth: np.ndarray, max_depth: float | None = None) -> np.ndarray:
    """RGB uint8 view of a depth map (black = invalid), for previews."""
    valid = depth > 0
    hi = max_depth or (float(np.percentile(depth[valid], 99)) if valid.any() else 1.0)
    x = np.clip(depth / max(hi, 1e-6), 0, 1)
    col = cv2.applyColorMap((x * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    col[~valid] = 0
    return col


def write_preview(path: Path, samples: list[Sample]) -> None:
    """Grid of RGB | depth rows, two samples per row."""
    tiles = [np.concatenate([s.image, colorize_depth(s.depth, 12.0)], axis=1) for s in samples]
    if len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + 2], axis=1) for i in range(0, len(tiles), 2)]
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[..., ::-1])


# ----------------------------------------------------------------------------- trajectories (video with poses)

TRAJ_WALL_MARGIN = 0.4      # metres the camera keeps from the walls
TRAJ_OBJECT_MARGIN = 0.3    # metres it keeps from any object's footprint below it


def camera_pose(cam: Camera) -> np.ndarray:
    """4x4 camera-to-world pose of the optical frame (x right, y down, z forward), metres:
    columns of R are the optical axes in the world, t is the camera centre."""
    T = np.eye(4)
    T[:3, :3] = cam.rotation
    T[:3, 3] = cam.position
    return T


def _angles(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) with camera_rotation(yaw, pitch, roll) == R."""
    f = R[:, 2]
    yaw, pitch = math.atan2(f[1], f[0]), math.asin(max(-1.0, min(1.0, f[2])))
    r = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    d = np.cross(f, r)
    return yaw, pitch, math.atan2(float(R[:, 0] @ d), float(R[:, 0] @ r))


def _clear(scene: Scene, x: float, y: float, z: float) -> bool:
    """Whether a camera at (x, y, z) keeps its margins from the walls and from every
    object that reaches up to its height (footprints, world-aligned bounds)."""
    hx, hy, _ = scene.room.half
    if not (TRAJ_WALL_MARGIN <= x <= 2 * hx - TRAJ_WALL_MARGIN and TRAJ_WALL_MARGIN <= y <= 2 * hy - TRAJ_WALL_MARGIN):
        return False
    for ob in scene.objects:
        b = _bounds(ob)
        lo, hi = b.min(axis=0), b.max(axis=0)
        if lo[2] > z + 0.3:            # ceiling panels and the like pass over the camera
            continue
        if lo[0] - TRAJ_OBJECT_MARGIN <= x <= hi[0] + TRAJ_OBJECT_MARGIN and \
                lo[1] - TRAJ_OBJECT_MARGIN <= y <= hi[1] + TRAJ_OBJECT_MARGIN:
            return False
    return True


def trajectory_cameras(rng: np.random.Generator, scene: Scene, start: Camera, n: int, step: float,
                       tries: int = 60) -> list[Camera]:
    """A smooth path of n cameras through the scene, driving like a robot: forward at
    ``step`` metres per frame along a heading that turns smoothly (two slow sinusoids and a
    drift, up to about +-60 degrees over the path), the view looking up to +-15 degrees off
    the heading, slight pitch and height changes. Paths that would leave the room or
    touch furniture are drawn again; after ``tries`` the step shrinks."""
    yaw0, pitch0, roll0 = _angles(start.rotation)
    x0, y0, z0 = start.position
    for attempt in range(tries * 4):
        length = step * (0.7 ** (attempt // tries))
        s = np.arange(n, dtype=np.float64) / max(n - 1, 1)
        a = rng.uniform(-0.6, 0.6, 2)
        w = rng.uniform(0.5, 2.0, 2) * math.pi
        ph = rng.uniform(0, 2 * math.pi, 2)
        turn = a[0] * np.sin(w[0] * s + ph[0]) + a[1] * np.sin(w[1] * s + ph[1]) + rng.uniform(-0.5, 0.5) * s
        turn -= turn[0]
        heading = yaw0 + rng.choice([0.0, math.pi]) * (attempt % 2) + turn
        look = math.radians(rng.uniform(-15, 15)) * np.sin(rng.uniform(0.5, 1.5) * math.pi * s)
        pitch = pitch0 + math.radians(rng.uniform(-3, 3)) * np.sin(rng.uniform(1, 3) * math.pi * s)
        bob = rng.uniform(0, 0.02) * np.sin(rng.uniform(2, 6) * math.pi * s)
        xs = x0 + length * np.concatenate([[0.0], np.cumsum(np.cos(heading[:-1]))])
        ys = y0 + length * np.concatenate([[0.0], np.cumsum(np.sin(heading[:-1]))])
        zs = z0 + bob
        if all(_clear(scene, float(x), float(y), float(z)) for x, y, z in zip(xs, ys, zs)):
            return [Camera((float(x), float(y), float(z)), camera_rotation(float(h + lk), float(p), roll0),
                           start.intr)
                    for x, y, z, h, lk, p in zip(xs, ys, zs, heading, look, pitch)]
    raise InputError("could not fit a camera path into this scene; try another --seed or a smaller --step")


@dataclass
class LockedExposure:
    """One exposure, white balance, blur and noise level for a whole sequence (a camera with
    locked auto-exposure, so brightness constancy holds); no vignetting, which moves with
    the camera, not with the scene."""

    gain: np.ndarray        # (3,) linear radiance -> [0, 1], white balance included
    sigma: float            # Gaussian blur, pixels
    std: float              # noise standard deviation on [0, 1]

    @classmethod
    def draw(cls, first: np.ndarray, rng: np.random.Generator) -> "LockedExposure":
        """Settings exposed for the first frame's radiance (H, W, 3)."""
        key = float(np.percentile(first.mean(axis=2)[::4, ::4], 70)) + 1e-6
        gain = (rng.uniform(0.35, 0.75) / key * (1.0 + rng.normal(0, 0.06, 3))).astype(F32)
        return cls(gain, float(rng.uniform(0.3, 0.8)), float(rng.uniform(0.002, 0.008)))

    def apply(self, radiance: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Linear radiance (H, W, 3) -> sRGB uint8; noise only when an rng is given."""
        img = np.clip(radiance * self.gain, 0, 1) ** F32(1 / 2.2)
        img = cv2.GaussianBlur(img, (0, 0), self.sigma)
        if rng is not None:
            img = img + rng.normal(0, self.std, img.shape).astype(F32)
        return np.ascontiguousarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))


def _supersampled(scene: Scene, cam: Camera, factor: int) -> np.ndarray:
    """Radiance rendered at ``factor`` x the size and area-averaged back, as a lens and
    sensor average the light over a pixel: single-ray pixels alias fine textures (carpet)
    into noise that differs from view to view, which a photometric loss would take for
    error."""
    if factor == 1:
        return render_scene(scene, cam)[0]
    k = cam.intr
    big = Camera(cam.position, cam.rotation, k.scaled(k.width * factor, k.height * factor))
    return cv2.resize(render_scene(scene, big)[0], (k.width, k.height), interpolation=cv2.INTER_AREA)


def iter_trajectory(seed: int, n: int, height: int = 256, width: int = 320, step: float = 0.08,
                    noise: bool = True, supersample: int = 3) -> Iterator[tuple[Sample, np.ndarray]]:
    """One random scene (``sample_scene(seed)``) seen from n cameras along a smooth path
    (trajectory_cameras), frame by frame: (Sample with exact metric depth and the
    intrinsics, 4x4 camera-to-world pose of the optical frame in metres). Fully determined
    by the arguments; ``noise`` False leaves out the sensor noise (exact photometry);
    colour is ``supersample``-times supersampled, depth is exact at the pixel centres."""
    check_render_size(height, width)
    if not 2 <= n <= 100_000 or not 0 < step <= 1.0:
        raise InputError(f"trajectory: need 2 <= frames <= 100000 and 0 < step <= 1 m, got {n}, {step}")
    scene, start = sample_scene(np.random.default_rng(seed), height, width)
    cams = trajectory_cameras(np.random.default_rng([seed, 1]), scene, start, n, step)
    rng = np.random.default_rng([seed, 2])
    exposure: LockedExposure | None = None
    for i, cam in enumerate(cams):
        radiance, depth = render_scene(scene, cam)
        radiance = _supersampled(scene, cam, supersample) if supersample > 1 else radiance
        exposure = exposure or LockedExposure.draw(radiance, rng)
        frame = Sample(exposure.apply(radiance, rng if noise else None), np.where(np.isfinite(depth), depth, 0).astype(F32),
                       cam.intr, name=f"traj{seed}_{i:06d}")
        yield frame, camera_pose(cam)


def write_trajectory(out: Path, seed: int, n: int, height: int, width: int, step: float,
                     noise: bool = True) -> Path:
    """A trajectory as a manifest folder (frames 000000..) with poses.txt, one line per frame."""
    from tqdm import tqdm

    from reflector_ros.data.manifest import save_frame, write_manifest_frames
    from reflector_ros.data.poses import write_poses_txt

    out.mkdir(parents=True, exist_ok=True)
    frames, poses = [], []
    for i, (s, pose) in enumerate(tqdm(iter_trajectory(seed, n, height, width, step, noise), total=n,
                                       desc="synth trajectory", unit="frame")):
        frames.append({**save_frame(out, s, f"{i:06d}"), "source": f"reflector synth trajectory seed {seed} frame {i}"})
        poses.append(pose)
    write_poses_txt(out / "poses.txt", poses)
    return write_manifest_frames(out, frames, name=f"reflector synthetic trajectory, seed {seed}, {n} frames, "
                                                   f"{step} m per frame",
                                 generator={"kind": "trajectory", "seed": seed, "count": n, "height": height,
                                            "width": width, "step": step})
