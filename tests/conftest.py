"""Shared fixtures: a synthetic RGB-D dataset with exactly known geometry, and a CLI runner."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # no test reaches a hub: models and data are built here
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataengine.scenes import write_dataset  # noqa: E402
from spacesgg.d2p import convert_dataset  # noqa: E402
from spacesgg.layers import aggregate_layers  # noqa: E402
from spacesgg.multiview import multiview_layers  # noqa: E402


def pytest_collection_modifyitems(session, config, items):
    """The docs' pages run in the background while the rest of the suite runs: start them now, collect them last."""
    docs = [item for item in items if item.nodeid.startswith("tests/test_docs.py::test_every_block")]
    if docs:
        items[:] = [item for item in items if item not in docs] + docs
        from test_docs import start_pages
        start_pages()


def run_inprocess(script, *args):
    """Run a repository script's main in this process, as its command line would (no interpreter start-up).

    Returns what run_script returns: an object with returncode, stdout and stderr.
    """
    import importlib.util
    import io
    from contextlib import redirect_stderr, redirect_stdout
    from types import SimpleNamespace

    from batchkit.cli import run_cli
    path = ROOT / script
    spec = importlib.util.spec_from_file_location(f"_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = run_cli(module.main, module.build_parser(), [str(a) for a in args])
        except SystemExit as e:                  # argparse refusing a flag
            code = e.code
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_script(script, *args, cwd=None):
    """Run a repository script as a user would, from another working directory."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT.parent, timeout=600)


@pytest.fixture(scope="session")
def objects_dir(tmp_path_factory):
    """The ten stand-in object renders (read-only for tests)."""
    from dataengine.grid import make_objects
    from dataengine.objects import OBJECT_NAMES
    out = tmp_path_factory.mktemp("objects")
    make_objects(OBJECT_NAMES, out)
    return out


@pytest.fixture(scope="session")
def tiny_frontend(tmp_path_factory):
    """Tiny random-weight models of every front-end family, saved by folder (read-only for tests)."""
    from dataengine.tiny_frontend import BUILDERS, build_tiny
    root = tmp_path_factory.mktemp("tiny_frontend")
    return {kind: build_tiny(kind, root / kind) for kind in BUILDERS}


@pytest.fixture(scope="session")
def scenes_dir(tmp_path_factory):
    """Six synthetic scenes with point clouds already made (read-only for tests)."""
    out = write_dataset(tmp_path_factory.mktemp("scenes") / "synthetic", n_scenes=6, seed=0)
    assert convert_dataset(out, workers=1) == 0
    return out


@pytest.fixture
def scenes_copy(scenes_dir, tmp_path):
    """A writable copy of the synthetic dataset."""
    return Path(shutil.copytree(scenes_dir, tmp_path / "synthetic"))


@pytest.fixture(scope="session")
def mv_file(scenes_dir, tmp_path_factory):
    """Stage-1.3 output of the synthetic scenes (read-only for tests)."""
    out = tmp_path_factory.mktemp("stage2")
    assert aggregate_layers(scenes_dir / "annotations.json", scenes_dir / "depth_maps", scenes_dir / "masks",
                            out / "layers.json") == 0
    assert multiview_layers(out / "layers.json", scenes_dir / "point_clouds", scenes_dir / "masks", out / "mv.json") == 0
    return out / "mv.json"
