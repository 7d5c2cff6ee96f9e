"""Benchmark stage-2 concurrency against a loopback OpenAI-compatible server with 200 ms latency.

    python bench/llm_query.py --requests 64 --latency 0.2

Runs the same 64 rotation requests at --concurrency 16 and at --concurrency 1
(fresh caches) in one run and prints the wall times and their ratio. Not a test.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataengine.scenes import write_dataset  # noqa: E402
from spacesgg.backends import LLMSettings  # noqa: E402
from spacesgg.d2p import convert_dataset  # noqa: E402
from spacesgg.layers import aggregate_layers  # noqa: E402
from spacesgg.llm_query import query  # noqa: E402
from spacesgg.multiview import multiview_layers  # noqa: E402


def _wait_for(port, seconds=10.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"stub server on port {port} did not start")


def main(args):
    os.environ["OPENAI_API_KEY"] = "bench-key"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with redirect_stdout(StringIO()):
            data = write_dataset(tmp / "scenes", n_scenes=args.requests // 6 + 2, seed=0)
            convert_dataset(data, workers=1)
            aggregate_layers(data / "annotations.json", data / "depth_maps", data / "masks", tmp / "layers.json")
            multiview_layers(tmp / "layers.json", data / "point_clouds", data / "masks", tmp / "mv.json")
        times = {}
        with socket.socket() as s:                    # a free loopback port for the server process
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "spacesgg.stub_server", "--port", str(port), "--latency",
                                   str(args.latency)], cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            _wait_for(port)
            with redirect_stdout(StringIO()):             # warm-up: the client's lazy imports and first connection
                query(tmp / "mv.json", "create_rotation_prompt", tmp / "warm.json", backend="openai", limit=1,
                      settings=LLMSettings(base_url=f"http://127.0.0.1:{port}/v1"))
            for concurrency in (16, 1):
                start = time.perf_counter()
                with redirect_stdout(StringIO()):
                    code = query(tmp / "mv.json", "create_rotation_prompt", tmp / f"out{concurrency}.json", backend="openai",
                                 limit=args.requests, concurrency=concurrency,
                                 settings=LLMSettings(base_url=f"http://127.0.0.1:{port}/v1"))
                times[concurrency] = time.perf_counter() - start
                assert code == 0, "a request failed"
        finally:
            server.terminate()
            server.wait()
    print(f"llm_query bench: {args.requests} requests, {args.latency * 1000:.0f} ms server latency (server in its own process)")
    print(f"  concurrency 1   {times[1]:6.2f} s")
    print(f"  concurrency 16  {times[16]:6.2f} s   -> {times[1] / times[16]:.1f}x faster (target >= 12x, ideal 16x)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--requests", type=int, default=64, help="requests per run (default %(default)s)")
    p.add_argument("--latency", type=float, default=0.2, help="server latency per request in seconds (default %(default)g)")
    main(p.parse_args())
