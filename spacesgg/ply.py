"""Binary little-endian PLY (float32 xyz + uchar rgb), written in one block, not point by point."""

import numpy as np

from batchkit.files import atomic_path

VERTEX_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def ply_header(count):
    return (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {count}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    ).encode("ascii")


def write_ply(path, xyz, rgb):
    """Write N x 3 float points with N x 3 uint8 colours atomically."""
    n = len(xyz)
    vertices = np.empty((n, VERTEX_DTYPE.itemsize), dtype=np.uint8)    # packed 15-byte records
    vertices[:, :12] = np.ascontiguousarray(xyz, dtype="<f4").view(np.uint8).reshape(n, 12)
    vertices[:, 12:] = rgb
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(ply_header(len(vertices)))
            vertices.tofile(f)


def read_ply(path):
    """Read a PLY written by write_ply: (N x 3 float32 xyz, N x 3 uint8 rgb)."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    vertices = np.frombuffer(data, dtype=VERTEX_DTYPE, count=count, offset=end)
    xyz = np.stack([vertices["x"], vertices["y"], vertices["z"]], axis=1)
    rgb = np.stack([vertices["red"], vertices["green"], vertices["blue"]], axis=1)
    return xyz, rgb
