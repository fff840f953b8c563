"""Spans for ``bench/timeline.py``: when a request entered and left each stage of the API worker and the miner.

Python imports ``sitecustomize`` at start-up from the first directory on ``sys.path`` that has one, so a
process started with this directory on ``PYTHONPATH`` and ``BENCH_SPANS_DIR`` set records, with
``time.perf_counter()`` (one clock for every process of the machine), the start and end of:

- ``api`` — the API worker's chat entry (``api.hot_path.serve_chat``);
- ``call`` — each miner call of the API worker (``MinerCall._run_whole`` and ``MinerCall._run``);
- ``miner`` — the miner's chat handler (``miner.chat.ChatCompletions.__call__``);
- ``forward`` and ``record`` — the API worker's batch sends to the validator and to its request log.

and writes them to ``$BENCH_SPANS_DIR/<pid>.spans`` every second (and at exit) as ``start end kind``
lines. Nothing is recorded without ``BENCH_SPANS_DIR``; the product's code is not changed, its functions are
wrapped once their modules are imported. This is a measuring tool: it costs the wrapped processes a few
microseconds per span.
"""

from __future__ import annotations

import os

if os.environ.get("BENCH_SPANS_DIR"):
    import atexit
    import builtins
    import functools
    import sys
    import threading
    import time

    _clock = time.perf_counter
    _spans: list[tuple[float, float, str]] = []
    _path = os.path.join(os.environ["BENCH_SPANS_DIR"], f"{os.getpid()}.spans")
    _writing = threading.Lock()  # the writer thread and the exit hook

    def _write() -> None:
        with _writing:
            end = len(_spans)  # spans appended from here on are the next write's (the request path only appends)
            pending = _spans[:end]
            del _spans[:end]  # one operation under the GIL: an append meanwhile stays
            if pending:
                with open(_path, "a") as out:
                    out.write("".join(f"{a:.7f} {b:.7f} {kind}\n" for a, b, kind in pending))

    def _every_second() -> None:
        while True:
            time.sleep(1.0)
            _write()

    def _timed(function, kind: str):
        @functools.wraps(function)
        async def timed(*args, **kwargs):
            start = _clock()
            try:
                return await function(*args, **kwargs)
            finally:
                _spans.append((start, _clock(), kind))
        return timed

    # (module, attribute path, kind); a function imported by name elsewhere is rebound there too
    _TARGETS = [
        ("api.hot_path", ("serve_chat",), "api"),
        ("api.miner_call", ("MinerCall", "_run_whole"), "call"),
        ("api.miner_call", ("MinerCall", "_run"), "call"),
        ("miner.chat", ("ChatCompletions", "__call__"), "miner"),
        ("api.forwarder", ("ScoringForwarder", "send"), "forward"),
        ("api.recorder", ("Recorder", "send"), "record"),
    ]
    _REBIND = {"api.hot_path": ("api.app", "serve_chat")}
    _done: set[tuple[str, tuple[str, ...]]] = set()
    _import = builtins.__import__

    def _wrap_loaded() -> None:
        for module_name, path, kind in _TARGETS:
            module = sys.modules.get(module_name)
            if (module_name, path) in _done or module is None:
                continue
            owner = module
            for name in path[:-1]:
                owner = getattr(owner, name, None)
            if owner is None or not hasattr(owner, path[-1]):
                continue  # the module is still being imported
            _done.add((module_name, path))
            wrapped = _timed(getattr(owner, path[-1]), kind)
            setattr(owner, path[-1], wrapped)
            if module_name in _REBIND:
                user, name = _REBIND[module_name]
                if user in sys.modules and hasattr(sys.modules[user], name):
                    setattr(sys.modules[user], name, wrapped)

    def _importing(*args, **kwargs):
        module = _import(*args, **kwargs)
        if len(_done) < len(_TARGETS):
            _wrap_loaded()
        return module

    builtins.__import__ = _importing
    atexit.register(_write)
    threading.Thread(target=_every_second, name="bench-spans", daemon=True).start()
