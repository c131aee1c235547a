"""A pytest plugin for mutation runs: tqdm with a lock of its own in each process, no monitor.

mutmut forks a child per mutant from one parent. tqdm's default lock holds a multiprocessing
RLock, a semaphore shared by every process forked after it was made, and each process using tqdm
starts a monitor thread that takes that lock every 10 s. A child that exits (os._exit) or is
killed while it or its monitor holds the lock leaves it held for good: from then on every
child's tqdm() waits forever, and mutmut reports a timeout per mutant whose tests pack a
checkpoint (published.pack_checkpoint's 24 timeouts of the first formats run). A threading lock
is copied into each child and dies with it; the tests run one process each, so nothing else
needs the shared one. tools/mutation/run.sh loads this with PYTEST_PLUGINS.
"""
import threading

from tqdm import tqdm

tqdm.set_lock(threading.RLock())
tqdm.monitor_interval = 0
