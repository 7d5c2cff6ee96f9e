"""Process pools that die with their parent and leave no temporary file behind.

Workers ignore Ctrl-C (the parent handles it and stops them), remove the
temporary files of the write in progress and exit on SIGTERM, and get SIGTERM
from the kernel when the parent dies, even by SIGKILL (Linux PR_SET_PDEATHSIG).
"""

import ctypes
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from .files import remove_pending

PR_SET_PDEATHSIG = 1


def _on_sigterm(signum, frame):
    remove_pending()
    os._exit(143)


def _init_worker(parent_pid):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass                                        # not Linux: the parent's own cleanup still stops us
    if os.getppid() != parent_pid:                  # the parent died before prctl took effect
        os._exit(143)


@contextmanager
def worker_pool(workers):
    """A ProcessPoolExecutor of `workers` processes; on any exit by exception its workers are stopped at once."""
    pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        for process in list((pool._processes or {}).values()):     # no public API stops running workers
            process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def pool_map(fn, jobs, workers, chunksize=1):
    """`fn` over `jobs` in input order, in this process (workers <= 1) or a worker pool; a generator."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    with worker_pool(min(workers, len(jobs))) as pool:
        yield from pool.map(fn, jobs, chunksize=chunksize)
