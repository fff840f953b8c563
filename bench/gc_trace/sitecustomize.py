"""Log every garbage collection over 0.5 ms of every Python process started with this folder on PYTHONPATH.

    GC_TRACE_DIR=/tmp/gc PYTHONPATH=bench/gc_trace .venv/bin/python -m miner      # or LocalSubnet(extra_env=…)

Each process appends ``perf_counter() at the end, milliseconds, generation, objects collected`` per
collection to ``$GC_TRACE_DIR/<api|miner|validator|other>-<pid>.txt``. ``perf_counter()`` is
CLOCK_MONOTONIC, the clock of ``bench/load.py --trace``'s third column, so a pause with no answer can
be matched with the collections that overlap it. Without ``GC_TRACE_DIR`` this does nothing. A
measurement aid: the durations are wall time, so a process descheduled during a collection shows it.
"""

import gc
import os
import time

_directory = os.environ.get("GC_TRACE_DIR")
if _directory:
    with open("/proc/self/cmdline", "rb") as _cmdline:
        _command = _cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    _name = next((name for name in ("api", "miner", "validator") if f"-m {name}" in _command), "other")
    os.makedirs(_directory, exist_ok=True)
    _log = open(os.path.join(_directory, f"{_name}-{os.getpid()}.txt"), "a", buffering=1)
    _started = [0.0]

    def _collection(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        now = time.perf_counter()
        if now - _started[0] > 0.0005:
            _log.write(f"{now:.6f} {(now - _started[0]) * 1000:.2f} {info['generation']} {info['collected']}\n")

    gc.callbacks.append(_collection)
