"""A one-node SLURM cluster (Debian's slurm-wlm, started here as root) runs the SpaceSGG array end to end."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

NEEDED = ("sbatch", "sinfo", "slurmctld", "slurmd", "munged", "munge")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in NEEDED) or os.geteuid() != 0,
                                reason="needs Debian's slurm-wlm and root (make test installs it on CI)")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait(condition, limit=60.0):
    end = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < end, "gave up waiting for SLURM"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    host = socket.gethostname().split(".")[0]
    ctld_port, d_port = _free_ports(2)
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=local", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool", f"SlurmctldPidFile={root}/ctld.pid",
        f"SlurmdPidFile={root}/d.pid", f"SlurmctldLogFile={root}/ctld.log", f"SlurmdLogFile={root}/d.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2", "MpiDefault=none",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}",
        f"NodeName={host} CPUs={os.cpu_count()} RealMemory=2000 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    (root / "state").mkdir()
    (root / "spool").mkdir()
    env = dict(os.environ, SLURM_CONF=str(conf))
    started_munge = subprocess.run(["munge", "-n"], capture_output=True).returncode != 0
    if started_munge:
        if not Path("/etc/munge/munge.key").is_file():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
        for d in ("/etc/munge", "/var/lib/munge", "/var/log/munge", "/run/munge"):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        shutil.chown("/etc/munge/munge.key", "munge", "munge")
        subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged"], check=True)
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
    _wait(lambda: "idle" in subprocess.run(["sinfo", "-h"], capture_output=True, text=True, env=env).stdout)
    yield env
    for pid in ("d.pid", "ctld.pid"):
        try:
            os.kill(int((root / pid).read_text()), 15)
        except (OSError, ValueError):
            pass


def test_two_task_array_then_merge_equals_one_run(cluster, scenes_dir, tmp_path):
    dataset = Path(shutil.copytree(scenes_dir, tmp_path / "ds", symlinks=True))
    env = dict(cluster, DATASET=str(dataset), PYTHON=sys.executable)
    proc = subprocess.run(["sbatch", "--wait", "--array=0-1", "--cpus-per-task=1", "--mem=500M", "--time=10",
                           f"--output={tmp_path}/slurm-%a.out",
                           str(ROOT / "slurm" / "spacesgg_array.sbatch")], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    logs = "".join(p.read_text() for p in tmp_path.glob("slurm-*.out"))
    assert proc.returncode == 0, proc.stderr + logs
    merged = subprocess.run(["bash", str(ROOT / "slurm" / "merge.sh")], capture_output=True, text=True, cwd=ROOT,
                            env=dict(env, OUT=str(dataset / "spacesgg"), SHARDS="2"), timeout=300)
    assert merged.returncode == 0, merged.stderr
    one = tmp_path / "one"
    subprocess.run(["bash", str(ROOT / "run_spacesgg.sh"), dataset, one], capture_output=True, env=env, timeout=600)
    for name in ("layers", "multiview"):
        assert json.loads((dataset / "spacesgg" / f"{name}.json").read_text()) == json.loads((one / f"{name}.json").read_text())
    for name in ("layer", "between", "rotation", "distance"):
        key = lambda r: r["id"]  # noqa: E731
        assert sorted(json.loads((dataset / "spacesgg" / f"{name}.json").read_text()), key=key) == \
            sorted(json.loads((one / f"{name}.json").read_text()), key=key)
