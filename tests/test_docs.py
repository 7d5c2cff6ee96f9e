"""Docs are code: every bash block of README.md and docs/*.md runs as written, in the page's order, from the root of
a fresh copy of the repository (the project's .venv linked in); a block the page marks
`<!-- docs-test: skip (why) -->` needs what CI has not (a GPU, the hub, a paid key) and is left out, with its reason;
one marked `<!-- docs-test: may exit 1 (why) -->` may end with exit 1 (some records failed, as the page says: tiny
random models find little to say), never with anything else.

Each page runs in its own copy, as a user would run it in one shell. The pages start in the background as soon as
the suite is collected (conftest.py), one at a time on one thread with one CPU thread per process, so they overlap
the rest of the suite; the tests here, ordered last, collect their results."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = ["docs/spatial-ids.md", "docs/real-photos.md", "docs/evaluation.md", "docs/spacesgg.md", "docs/scale.md",
         "docs/development.md", "README.md"]
BLOCK_RE = re.compile(r"(?:<!-- docs-test: (?P<kind>skip|may exit 1) \((?P<why>[^)]*)\) -->\n)?```bash\n(?P<code>.*?)```", re.S)
LINK_RE = re.compile(r"\]\((?P<target>[^)#\s]+)(?:#[^)]*)?\)")


def blocks(text):
    """[(code, marker kind or None, its reason)] of a Markdown page's bash blocks, in order."""
    return [(m["code"], m["kind"], m["why"]) for m in BLOCK_RE.finditer(text)]


def page_script(text):
    """The page's runnable blocks as one bash script that names each block on stderr before running it."""
    parts = ["set -euo pipefail"]
    for k, (code, kind, _why) in enumerate(blocks(text), 1):
        if kind == "skip":
            continue
        if kind == "may exit 1":                      # in a subshell: exit 1 passes, anything else stops the page
            code = f"( set -euo pipefail\n{code}) || {{ code=$?; [ $code -eq 1 ] || exit $code; }}\n"
        parts.append(f'echo "::docs block {k}::" >&2\n{code}')
    return "\n".join(parts) + "\n"


def run_page(text, workdir, timeout=900):
    """Run a page's blocks from `workdir`; (exit code, output, the block that was running when it stopped)."""
    env = {"PATH": f"{workdir / '.venv' / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir / ".home"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg", "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "-c", page_script(text)], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)
    started = re.findall(r"::docs block (\d+)::", proc.stderr)
    return proc.returncode, proc.stdout + proc.stderr, int(started[-1]) if started else 0


def fresh_copy(dest):
    """The repository's tracked files (what a clone has), with the project's .venv linked in."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    for name in ("docs", "README.md"):                 # the working tree's docs, committed or not
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(Path(sys.prefix))
    (dest / ".home").mkdir()
    return dest


def _run_one(page, root):
    start = time.perf_counter()
    work = fresh_copy(Path(tempfile.mkdtemp(prefix=f"{Path(page).stem}-", dir=root)))
    code, output, block = run_page((ROOT / page).read_text(encoding="utf-8"), work)
    shutil.rmtree(work, ignore_errors=True)
    return code, output, block, time.perf_counter() - start


_RUNS = {}


def start_pages():
    """Start running every page in the background (once); {page: future of (code, output, block, seconds)}."""
    if not _RUNS:
        root = tempfile.mkdtemp(prefix="docs-test-")
        pool = ThreadPoolExecutor(1)
        _RUNS.update({page: pool.submit(_run_one, page, root) for page in PAGES})
        pool.shutdown(wait=False)
    return _RUNS


@pytest.fixture(scope="module")
def page_runs():
    return {page: future.result() for page, future in start_pages().items()}


@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs_as_written(page, page_runs):
    code, output, block, seconds = page_runs[page]
    assert code == 0, f"{page}: block {block} failed (exit {code}) after {seconds:.0f}s:\n{output[-4000:]}"


def test_a_broken_command_fails_the_page(tmp_path):
    page = "intro\n```bash\necho one\n```\n<!-- docs-test: skip (needs a GPU) -->\n```bash\nexit 7\n```\n" \
           "<!-- docs-test: may exit 1 (random models) -->\n```bash\nbash -c 'exit 1'\n```\n" \
           "```bash\npython -c 'import sys; sys.exit(3)'\necho never\n```\n"
    assert [(kind, why) for _, kind, why in blocks(page)] == [(None, None), ("skip", "needs a GPU"),
                                                              ("may exit 1", "random models"), (None, None)]
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    code, output, block = run_page(page, tmp_path)
    assert code == 3 and block == 4 and "one" in output and "never" not in output
    code, output, block = run_page(page.replace("exit 1'", "exit 2'"), tmp_path)
    assert code == 2 and block == 3


def test_nothing_points_outside_the_repository():
    """No file of the repository names the design contract or anything beside the clone; every relative link of
    the docs leads to a file that is there."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pages = {f for f in files if f.endswith(".md")} | {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")}
    for name in sorted(set(files) | pages):
        path = ROOT / name
        if path.suffix in (".py", ".sh", ".md", ".sbatch", ".ipynb", ".toml", ".txt") or path.name == "Makefile":
            text = path.read_text(encoding="utf-8", errors="replace")
            assert "shared/" + "DESIGN" not in text and "DESIGN" + ".md" not in text, name
    for name in pages:
        for m in LINK_RE.finditer((ROOT / name).read_text(encoding="utf-8")):
            target = m["target"]
            if "://" not in target and not target.startswith("mailto:"):
                assert (ROOT / name).parent.joinpath(target).exists(), f"{name}: link to {target} leads nowhere"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", "\n".join(lines))
    assert images and all((ROOT / image).is_file() and os.path.getsize(ROOT / image) < 300_000 for image in images)
