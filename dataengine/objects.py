"""Offline stand-ins for the ten Objaverse object renders: small 3D models of primitives, ray-marched and shaded.

Each object is a union of signed-distance primitives with one colour each,
seen by an orthographic camera from the front, a little above and to the
right, lit by a key light. Model frame: x right, y up, z toward the viewer
(units: about one object height). Output: RGBA, transparent background,
centred on a square canvas.
"""

import numpy as np
from PIL import Image

OBJECT_NAMES = ("backpack", "fan", "camel", "frog", "dog", "cake", "log", "robot", "person", "teapot")
RENDER_SIZE = 256
VIEW_DIR = np.array([-0.35, -0.45, -1.0]) / np.linalg.norm([-0.35, -0.45, -1.0])   # from the camera into the scene
LIGHT_DIR = np.array([0.5, 0.8, 0.6]) / np.linalg.norm([0.5, 0.8, 0.6])             # toward the light


def _len(v):
    return np.sqrt((v * v).sum(-1))


def sphere(c, r):
    c = np.asarray(c, float)
    return lambda p: _len(p - c) - r


def ellipsoid(c, radii):
    c, radii = np.asarray(c, float), np.asarray(radii, float)

    def f(p):
        q = p - c
        k0 = _len(q / radii)
        k1 = _len(q / (radii * radii))
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
    return f


def capsule(a, b, r):
    a, b = np.asarray(a, float), np.asarray(b, float)
    ba = b - a

    def f(p):
        pa = p - a
        h = np.clip((pa @ ba) / (ba @ ba), 0.0, 1.0)
        return _len(pa - h[:, None] * ba) - r
    return f


def round_box(c, half, r=0.02):
    c, half = np.asarray(c, float), np.asarray(half, float) - r

    def f(p):
        q = np.abs(p - c) - half
        return _len(np.maximum(q, 0.0)) + np.minimum(q.max(-1), 0.0) - r
    return f


def cylinder(c, r, h, axis=1):
    """Capped cylinder of radius r and half-length h along `axis` (0 x, 1 y, 2 z)."""
    c = np.asarray(c, float)
    others = [i for i in range(3) if i != axis]

    def f(p):
        q = p - c
        d = np.stack([_len(q[:, others]) - r, np.abs(q[:, axis]) - h], -1)
        return np.minimum(d.max(-1), 0.0) + _len(np.maximum(d, 0.0))
    return f


def torus(c, big_r, r):
    """Ring in the x-y plane (axis z)."""
    c = np.asarray(c, float)

    def f(p):
        q = p - c
        return _len(np.stack([_len(q[:, :2]) - big_r, q[:, 2]], -1)) - r
    return f


def _legs(xs, zs, y0, y1, r, color):
    return [(capsule((x, y0, z), (x, y1, z), r), color) for x in xs for z in zs]


def object_parts(name):
    """[(sdf, rgb), ...] of an object model."""
    tan, brown, green = (205, 165, 100), (120, 75, 40), (70, 160, 60)
    if name == "backpack":
        return [(round_box((0, 0, 0), (0.32, 0.45, 0.17), 0.09), (40, 90, 190)),
                (round_box((0, -0.15, 0.17), (0.24, 0.2, 0.07), 0.05), (30, 60, 140)),
                (capsule((-0.18, 0.42, -0.05), (0.18, 0.42, -0.05), 0.04), (25, 25, 30)),
                (capsule((-0.2, 0.3, -0.2), (-0.2, -0.35, -0.2), 0.04), (25, 25, 30)),
                (capsule((0.2, 0.3, -0.2), (0.2, -0.35, -0.2), 0.04), (25, 25, 30))]
    if name == "fan":
        blades = [(ellipsoid((0.22 * np.cos(a), 0.25 + 0.22 * np.sin(a), 0.08), (0.16, 0.07, 0.02)), (120, 190, 230))
                  for a in (0.3, 0.3 + 2.09, 0.3 + 4.19)]
        return [(cylinder((0, -0.47, 0), 0.22, 0.03), (90, 90, 100)), (capsule((0, -0.45, 0), (0, 0.2, 0), 0.03), (150, 150, 160)),
                (torus((0, 0.25, 0.05), 0.35, 0.025), (200, 200, 210)), (sphere((0, 0.25, 0.08), 0.06), (90, 90, 100))] + blades
    if name == "camel":
        return ([(ellipsoid((0, 0.05, 0), (0.42, 0.17, 0.16)), tan), (sphere((-0.12, 0.2, 0), 0.13), tan),
                 (sphere((0.14, 0.2, 0), 0.12), tan), (capsule((0.38, 0.08, 0), (0.5, 0.35, 0), 0.06), tan),
                 (ellipsoid((0.56, 0.38, 0), (0.1, 0.05, 0.05)), tan)]
                + _legs((-0.28, 0.28), (-0.08, 0.08), -0.05, -0.5, 0.035, (185, 145, 85)))
    if name == "frog":
        return [(ellipsoid((0, -0.1, 0), (0.4, 0.2, 0.3)), green), (sphere((-0.14, 0.1, 0.15), 0.09), green),
                (sphere((0.14, 0.1, 0.15), 0.09), green), (sphere((-0.15, 0.12, 0.23), 0.04), (20, 20, 20)),
                (sphere((0.15, 0.12, 0.23), 0.04), (20, 20, 20)),
                (ellipsoid((-0.34, -0.25, 0.05), (0.14, 0.06, 0.2)), (50, 130, 45)),
                (ellipsoid((0.34, -0.25, 0.05), (0.14, 0.06, 0.2)), (50, 130, 45))]
    if name == "dog":
        return ([(ellipsoid((0, 0, 0), (0.36, 0.15, 0.14)), brown), (sphere((0.38, 0.2, 0), 0.13), brown),
                 (ellipsoid((0.52, 0.17, 0), (0.09, 0.05, 0.06)), (90, 55, 30)), (sphere((0.6, 0.18, 0), 0.03), (15, 15, 15)),
                 (ellipsoid((0.34, 0.3, 0.1), (0.04, 0.09, 0.03)), (80, 50, 25)),
                 (capsule((-0.34, 0.05, 0), (-0.5, 0.25, 0), 0.03), brown)]
                + _legs((-0.24, 0.24), (-0.08, 0.08), -0.05, -0.42, 0.04, (100, 60, 30)))
    if name == "cake":
        return [(cylinder((0, -0.22, 0), 0.42, 0.16), (240, 170, 190)), (cylinder((0, -0.04, 0), 0.43, 0.025), (250, 250, 245)),
                (cylinder((0, 0.1, 0), 0.3, 0.12), (245, 200, 215)), (cylinder((0, 0.23, 0), 0.31, 0.02), (250, 250, 245)),
                (capsule((0, 0.22, 0), (0, 0.38, 0), 0.025), (90, 160, 230)), (ellipsoid((0, 0.44, 0), (0.03, 0.05, 0.03)), (255, 170, 30))]
    if name == "log":
        return [(cylinder((0, 0, 0), 0.22, 0.5, axis=0), brown), (cylinder((0.5, 0, 0), 0.2, 0.012, axis=0), (215, 175, 120)),
                (cylinder((-0.5, 0, 0), 0.2, 0.012, axis=0), (215, 175, 120)),
                (capsule((0.1, 0.2, 0.05), (0.2, 0.38, 0.05), 0.035), (100, 65, 35))]
    if name == "robot":
        metal, dark = (170, 175, 185), (70, 75, 85)
        return [(round_box((0, 0.02, 0), (0.22, 0.22, 0.14), 0.03), metal), (round_box((0, 0.38, 0), (0.15, 0.12, 0.12), 0.03), metal),
                (sphere((-0.06, 0.4, 0.12), 0.03), (230, 40, 40)), (sphere((0.06, 0.4, 0.12), 0.03), (230, 40, 40)),
                (capsule((0, 0.5, 0), (0, 0.6, 0), 0.015), dark), (sphere((0, 0.62, 0), 0.03), (230, 40, 40)),
                (capsule((-0.28, 0.18, 0), (-0.34, -0.15, 0), 0.05), dark), (capsule((0.28, 0.18, 0), (0.34, -0.15, 0), 0.05), dark),
                (round_box((-0.1, -0.38, 0), (0.07, 0.17, 0.08), 0.02), dark), (round_box((0.1, -0.38, 0), (0.07, 0.17, 0.08), 0.02), dark)]
    if name == "person":
        skin, shirt, trousers = (235, 190, 160), (200, 40, 50), (40, 60, 120)
        return [(sphere((0, 0.42, 0), 0.1), skin), (round_box((0, 0.12, 0), (0.14, 0.19, 0.08), 0.05), shirt),
                (capsule((-0.19, 0.25, 0), (-0.23, -0.05, 0), 0.04), shirt), (capsule((0.19, 0.25, 0), (0.23, -0.05, 0), 0.04), shirt),
                (capsule((-0.07, -0.08, 0), (-0.08, -0.5, 0), 0.055), trousers),
                (capsule((0.07, -0.08, 0), (0.08, -0.5, 0), 0.055), trousers), (ellipsoid((0, 0.5, 0), (0.1, 0.05, 0.1)), (60, 40, 25))]
    if name == "teapot":
        white, teal = (235, 235, 230), (40, 150, 150)
        return [(ellipsoid((0, -0.05, 0), (0.35, 0.27, 0.3)), white), (ellipsoid((0, 0.21, 0), (0.18, 0.05, 0.16)), teal),
                (sphere((0, 0.29, 0), 0.05), teal), (capsule((0.3, -0.05, 0), (0.52, 0.2, 0), 0.05), white),
                (torus((-0.35, 0.0, 0), 0.14, 0.035), teal), (cylinder((0, -0.31, 0), 0.24, 0.02), teal)]
    raise KeyError(name)


def render_object(name, size=RENDER_SIZE):
    """RGBA uint8 array (size x size) of the named stand-in, centred, transparent background."""
    parts = object_parts(name)
    right = np.cross(VIEW_DIR, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, VIEW_DIR)
    extent = 0.75                                           # half-width of the view in model units
    s = (np.arange(size) + 0.5) / size * 2 - 1
    gx, gy = np.meshgrid(s * extent, -s * extent)
    origins = gx.reshape(-1, 1) * right + gy.reshape(-1, 1) * up - 3.0 * VIEW_DIR
    t = np.zeros(len(origins))
    hit = np.zeros(len(origins), bool)
    active = np.arange(len(origins))

    def sdf(p):
        d = np.stack([f(p) for f, _ in parts], -1)
        return d.min(-1), d.argmin(-1)

    for _ in range(96):                                     # sphere tracing, only rays still marching
        if active.size == 0:
            break
        d, _ = sdf(origins[active] + t[active, None] * VIEW_DIR)
        t[active] += d
        done = d < 1e-3
        hit[active[done]] = True
        active = active[~done & (t[active] < 6.0)]
    p = origins[hit] + t[hit, None] * VIEW_DIR
    _, part = sdf(p)
    eps = 1e-3
    normal = np.stack([sdf(p + e)[0] - sdf(p - e)[0] for e in np.eye(3) * eps], -1)
    normal /= np.maximum(_len(normal)[:, None], 1e-9)
    colors = np.array([c for _, c in parts], float)[part]
    diffuse = np.clip(normal @ LIGHT_DIR, 0, 1)
    half = (LIGHT_DIR - VIEW_DIR) / np.linalg.norm(LIGHT_DIR - VIEW_DIR)
    specular = np.clip(normal @ half, 0, 1) ** 32
    rgb = colors * (0.35 + 0.65 * diffuse[:, None]) + 60 * specular[:, None]
    out = np.zeros((size * size, 4), np.uint8)
    out[hit, :3] = np.clip(rgb, 0, 255)
    out[hit, 3] = 255
    return _centre(out.reshape(size, size, 4))


def _centre(rgba, margin=0.04):
    """Crop to the opaque pixels and centre them on a square transparent canvas of the same size."""
    size = rgba.shape[0]
    ys, xs = np.nonzero(rgba[..., 3])
    crop = Image.fromarray(rgba[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1])
    inner = int(round(size * (1 - 2 * margin)))
    scale = inner / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(crop, ((size - crop.width) // 2, (size - crop.height) // 2))
    return np.asarray(canvas)
