"""The HTML inspector in a real headless Chromium: pages load cleanly and the boxes sit where the annotation puts them."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import run_inprocess
from spacesgg.inspect import LAYER_COLOURS
from spacesgg.llm_query import query

CHROMIUM = shutil.which("chromium")


def _shoot(page, png, profile):
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--force-device-scale-factor=1", "--hide-scrollbars",
                           "--window-size=900,800", f"--screenshot={png}", "--enable-logging=stderr", "--v=0",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    return proc


def _find(screen, image):
    """Top-left (x, y) where `image` appears unscaled in `screen`."""
    h, w = image.shape[:2]
    strip = image[0, :40]
    ys, xs = np.nonzero((screen[:, :, :3] == strip[0]).all(-1))
    for y, x in zip(ys, xs):
        if x + w <= screen.shape[1] and y + h <= screen.shape[0] and (screen[y, x:x + 40, :3] == strip).all() \
                and (screen[y + h // 2, x:x + w, :3] == image[h // 2]).mean() > 0.95:
            return x, y
    raise AssertionError("the image is not in the screenshot")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make setup installs it)")
def test_pages_load_without_errors_and_boxes_sit_on_the_objects(mv_file, scenes_dir, tmp_path):
    layer = tmp_path / "layer.json"
    assert query(mv_file, "create_layer_prompt", layer, image_root=scenes_dir / "images") == 0
    proc = run_inprocess("spacesgg/inspect.py", "--anno-file", mv_file, "--records", layer, "--output-dir",
                         tmp_path / "site", "--image-root", scenes_dir / "images")
    assert proc.returncode == 0, proc.stderr
    index = (tmp_path / "site" / "index.html").read_text()
    assert "6 images" in index and index.count("pages/scene_") == 6
    mv = json.loads(mv_file.read_text())
    key, record = next(iter(mv.items()))
    stem = key.rsplit("/", 1)[1][:-4]
    for page in (tmp_path / "site" / "index.html", tmp_path / "site" / "pages" / f"{stem}.html"):
        shot = _shoot(page, tmp_path / f"{page.stem}.png", tmp_path / "profile")
        assert shot.returncode == 0, shot.stderr[-2000:]
        console = [line for line in shot.stderr.splitlines() if "CONSOLE" in line or "Failed to load" in line]
        assert not console, console
    screen = np.asarray(Image.open(tmp_path / f"{stem}.png").convert("RGB"))
    image = np.asarray(Image.open(scenes_dir / "images" / f"{stem}.png").convert("RGB"))
    ox, oy = _find(screen, image)
    level = {oid: k for k, lv in enumerate(record["levels"]) for oid in lv}
    for oid, obj in record["objects"].items():
        x0, y0, x1, y1 = obj["box"]
        colour = tuple(int(LAYER_COLOURS[level[oid]][i:i + 2], 16) for i in (1, 3, 5))
        mid_y = int(oy + (y0 + y1) / 2)
        left, right = screen[mid_y, int(ox + x0) + 1], screen[mid_y, int(ox + x1) - 2]
        assert tuple(left) == colour and tuple(right) == colour, (oid, left, right, colour)
