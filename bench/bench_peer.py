"""Side by side, in one run: a fake upstream directly, LiteLLM proxy in front of it, and our stack in front of it.

    .venv/bin/python bench/bench_peer.py [--seconds 5] [--skip-litellm] [--load wrk] [--unpinned]

Starts ``bench/fake_upstream.py`` (an OpenAI-compatible server with a fixed
short answer: 20 chunks when streamed), then, on the same machine:

- LiteLLM proxy, ONE worker, with a config that routes the model ``default``
  to the fake upstream (``openai/`` provider, ``api_base``). LiteLLM is not a
  dependency of this project: it is installed on first use into its own venv,
  ``bench/.peer-venv`` (git-ignored), at the version pinned below. If that
  install fails the comparison runs without it.
- our stack: one reference miner with ``MINER_BACKEND=upstream`` pointing at
  the fake upstream, the validator and ONE API worker (``LocalSubnet``).

Load comes from ``bench/load.py`` in a separate process (or, with ``--load wrk``,
from ``wrk``, as outside comparisons do: ``bench/wrk_load.py``), at concurrency 1
and 32, non-stream and stream, against each of the three in turn (interleaved per
case, so that a change in the machine's background load hits all three
alike). Requests to ours pin the one miner (``uids``) unless ``--unpinned``: then
they are plain OpenAI requests, and the API's routing picks the miner. Prints
requests/s, p50/p99, errors, CPU µs per request of the gateway processes, the
upstream and the load generator, and the ratios: each gateway against direct,
ours against LiteLLM.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fake_upstream import MODEL  # noqa: E402
from bench.measure import LOAD_GENERATOR, family, machine_line, run_load, wait_until_quiet  # noqa: E402
from bench.wrk_load import available as wrk_available  # noqa: E402
from bench.wrk_load import run_wrk  # noqa: E402
from localnet.launcher import LocalSubnet, free_port, stop_group  # noqa: E402

LITELLM_VERSION = "1.80.0"  # the version issue 14 compares against
LITELLM_KEY = "sk-bench-" + "0" * 32  # LiteLLM refuses to start without a master key
DEFAULT_VENV = ROOT / "bench" / ".peer-venv"
OUR_PROCESSES = ("api", "miner", "validator")


def wait_http(url: str, timeout: float, process: subprocess.Popen) -> None:
    """Until ``url`` answers 200, or raise (also when the process has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def spawn(command: list[str], log: Path, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop(process: Optional[subprocess.Popen]) -> None:
    """The process group this script started (if any), stopped."""
    if process is not None:
        stop_group(process)


# -- LiteLLM ----------------------------------------------------------------------------------------
def litellm_executable(venv: Path) -> Optional[Path]:
    """LiteLLM's CLI from its own venv, installing it there first if needed; None (and why) if that fails."""
    executable = venv / "bin" / "litellm"
    if executable.exists():
        return executable
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once) …", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"],
                       check=True, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(f"LiteLLM skipped: could not install it ({detail.strip()[-500:]})")
        return None
    return executable if executable.exists() else None


def installed_version(venv: Path) -> str:
    return subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import importlib.metadata as m; print(m.version('litellm'))"],
                          capture_output=True, text=True).stdout.strip() or "unknown"


def litellm_config(path: Path, upstream_url: str) -> Path:
    path.write_text(
        "model_list:\n"
        "  - model_name: default\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream_url}\n"
        "      api_key: unused\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    return path


def start_litellm(venv: Path, directory: Path, upstream_url: str) -> tuple[Optional[subprocess.Popen], int]:
    """The proxy and its port, or (None, 0) when it cannot be installed or started."""
    executable = litellm_executable(venv)
    if executable is None:
        return None, 0
    port = free_port()
    config = litellm_config(directory / "litellm.yaml", upstream_url)
    # No remote cost map (no internet), and uvicorn's log level ERROR: no access log line per request.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    command = [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
               "--num_workers", "1"]
    process = spawn(command, directory / "litellm.log", env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180, process)
    except (RuntimeError, TimeoutError) as exc:
        stop(process)
        log = (directory / "litellm.log").read_text(errors="replace")[-1500:]
        print(f"LiteLLM skipped: it did not start ({exc}):\n{log}")
        return None, 0
    print(f"LiteLLM {installed_version(venv)} (pinned {LITELLM_VERSION}): litellm {' '.join(command[1:])}")
    return process, port


# -- the run ----------------------------------------------------------------------------------------
def start_ours(directory: Path, upstream_url: str, start_timeout: float = 60.0, **subnet: Any) -> LocalSubnet:
    """``subnet``: more of ``LocalSubnet``'s arguments (``bench/instructions.py``: the code to run, and how)."""
    net = LocalSubnet(directory, api_port=free_port(), validator_port=free_port(), miner_ports=[free_port()],
                      behaviours=["good"], api_workers=1, web_port=free_port(),
                      miner_settings=[{"miner_backend": "upstream", "upstream_url": upstream_url,
                                       "upstream_api_key": "unused",  # as LiteLLM's: a key-checking upstream
                                       "upstream_model": MODEL}],
                      validator_settings={"synthetic_interval_seconds": 3600},
                      extra_env={"LOG_LEVEL": "WARNING"}, **subnet)
    return started(net, start_timeout)


def started(net: LocalSubnet, timeout: float = 60.0) -> LocalSubnet:
    """``net`` started, or every process it had started stopped again and the error raised."""
    try:
        net.start(timeout)
    except Exception:
        net.stop()
        raise
    return net


@contextmanager
def upstream_and_ours(directory: Path, **ours: Any) -> Iterator[tuple[LocalSubnet, str]]:
    """The fake upstream and our stack in front of it (``start_ours``, given ``ours``), stopped on the way out;
    (net, upstream URL)."""
    port = free_port()
    upstream_url = f"http://127.0.0.1:{port}/v1"
    upstream = spawn([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(port)],
                     directory / "upstream.log")
    net: Optional[LocalSubnet] = None
    try:
        wait_http(upstream_url + "/models", 30, upstream)
        net = start_ours(directory / "localnet", upstream_url, **ours)
        yield net, upstream_url
    finally:
        if net is not None:
            net.stop()
        stop(upstream)


def print_row(case: str, name: str, result: dict, gateway: tuple[str, ...]) -> None:
    cpu = result["cpu_us"]
    gateway_us = sum(cpu[server] for server in gateway)
    total = gateway_us + cpu["upstream"] + cpu["load"]
    split = f"  ({', '.join(f'{server} {cpu[server]:.0f}' for server in gateway)})" if len(gateway) > 1 else ""
    print(f"{case:<24}{name:<9}{result['rps']:>8.0f}{result['p50_ms']:>9.2f}{result['p99_ms']:>9.2f}"
          f"{result['errors']:>7}{gateway_us:>9.0f}{cpu['upstream']:>9.0f}{cpu['load']:>7.0f}{total:>7.0f}{split}")


def ratio(value: float, base: float) -> str:
    return f"x{value / base:.2f}" if base and base == base else "x n/a"  # n/a: nothing to divide by (or NaN)


def compare(label: str, result: dict, base: dict) -> str:
    return (f"{label}: rps {ratio(result['rps'], base['rps'])}, p50 {ratio(result['p50_ms'], base['p50_ms'])} "
            f"({result['p50_ms'] - base['p50_ms']:+.2f} ms), p99 {ratio(result['p99_ms'], base['p99_ms'])}")


@dataclass
class Target:
    """One of the three servers the load is pointed at, and the processes charged for it."""

    name: str
    url: str  # scheme, host and port
    key: str = ""
    uid: Optional[int] = None  # ours: the miner pinned with ``uids``
    servers: dict[str, list[int]] = field(default_factory=dict)
    gateway: tuple[str, ...] = ()

    def load_arguments(self) -> list[str]:
        arguments = ["--url", self.url]
        if self.key:
            arguments += ["--key", self.key]
        if self.uid is not None:
            arguments += ["--uid", str(self.uid)]
        return arguments

    def body(self, stream: bool) -> str:
        """The request ``bench/load.py`` sends (``api_body``), for wrk."""
        body = {"model": "default", "messages": [{"role": "user", "content": "benchmark"}], "stream": stream,
                "max_tokens": 20, "seed": 1}
        if self.uid is not None:
            body["uids"] = [self.uid]
        return json.dumps(body)


def measure(target: Target, load: str, *, stream: bool, concurrency: int, seconds: float,
            servers: dict[str, list[int]]) -> dict:
    """One run against ``target`` with ``bench/load.py`` or wrk; the same result shape either way."""
    if load == "wrk":
        return run_wrk(target.url + "/v1/chat/completions", target.body(stream), concurrency=concurrency,
                       seconds=seconds, servers=servers, key=target.key)
    arguments = [*target.load_arguments(), "--concurrency", str(concurrency), "--seconds", str(seconds)]
    if stream:
        arguments.append("--stream")
    return run_load(arguments, servers)


def warm_up(target: Target, load: str, seconds: float) -> None:
    """A few requests of each kind first: LiteLLM imports much of itself on its first request (seconds)."""
    for stream in (False, True):
        measure(target, load, stream=stream, concurrency=4, seconds=seconds, servers={})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warm-up", type=float, default=2.0, help="seconds of unreported load per target and kind")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="where LiteLLM is (or gets) installed")
    parser.add_argument("--load", choices=("load.py", "wrk"), default="load.py",
                        help="the load generator: ours (bench/load.py) or wrk (apt-get install wrk)")
    parser.add_argument("--unpinned", action="store_true",
                        help="plain OpenAI requests to ours (no uids): the API's routing picks the miner")
    args = parser.parse_args()
    if args.load == "wrk" and not wrk_available():
        parser.error("--load wrk: wrk is not installed (apt-get install -y wrk)")

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        upstream_port = free_port()
        upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
        upstream = spawn([sys.executable, str(ROOT / "bench" / "fake_upstream.py"), "--port", str(upstream_port)],
                         directory / "upstream.log")
        litellm: Optional[subprocess.Popen] = None
        litellm_port = 0
        net: Optional[LocalSubnet] = None
        try:
            wait_http(upstream_url + "/models", 30, upstream)
            print(machine_line())
            print(LOAD_GENERATOR if args.load == "load.py" else
                  "load generator: wrk, one thread, one keep-alive connection per client (bench/wrk_load.py)")
            if not args.skip_litellm:
                litellm, litellm_port = start_litellm(args.venv, directory, upstream_url)
            net = start_ours(directory / "localnet", upstream_url)
            key = net.create_api_key("bench")
            miner = net.member("miner")
            miner_process = next(p for name, p in net.processes.items() if name.startswith("miner"))
            upstream_pids = [upstream.pid]

            targets = [Target("direct", f"http://127.0.0.1:{upstream_port}")]
            if litellm is not None:
                targets.append(Target("litellm", f"http://127.0.0.1:{litellm_port}", LITELLM_KEY,
                                      servers={"litellm": family(litellm.pid)}, gateway=("litellm",)))
            targets.append(Target("ours", net.api_url, key, None if args.unpinned else miner.uid,
                                  servers={"api": family(net.processes["api"].pid),
                                           "miner": family(miner_process.pid),
                                           "validator": [net.processes["validator"].pid]},
                                  gateway=OUR_PROCESSES))

            for target in targets:
                warm_up(target, args.load, args.warm_up)
            print(f"fake upstream {upstream_url} (20 chunks when streamed); ours: one API worker, one reference "
                  f"miner (MINER_BACKEND=upstream), the validator; {args.seconds:g} s per run; requests to ours "
                  f"{'unpinned (routing picks the miner)' if args.unpinned else 'pin the miner (uids)'}")
            print("CPU columns: µs per request of the gateway's processes, the fake upstream, the load generator, "
                  "and their sum; each run starts once the machine is quiet (bench.measure.wait_until_quiet)")
            print(f"{'case':<24}{'target':<9}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
                  f"{'gateway':>9}{'upstream':>9}{'load':>7}{'sum':>7}")
            for stream in (False, True):
                for concurrency in (1, 32):
                    case = f"{'stream 20 chunks' if stream else 'non-stream'}, c={concurrency}"
                    results = {}
                    for target in targets:
                        wait_until_quiet()
                        results[target.name] = measure(target, args.load, stream=stream, concurrency=concurrency,
                                                       seconds=args.seconds,
                                                       servers={**target.servers, "upstream": upstream_pids})
                        print_row(case, target.name, results[target.name], target.gateway)
                    for name in ("litellm", "ours"):
                        if name in results:
                            print(" " * 24 + compare(f"{name} vs direct", results[name], results["direct"]))
                    if "litellm" in results:
                        ours, peer = results["ours"], results["litellm"]
                        cpu = ratio(sum(ours["cpu_us"][s] for s in OUR_PROCESSES), peer["cpu_us"]["litellm"])
                        print(" " * 24 + compare("ours vs litellm", ours, peer) + f", gateway CPU per request {cpu}")
        finally:
            if net is not None:
                net.stop()
            stop(litellm)
            stop(upstream)


if __name__ == "__main__":
    main()
