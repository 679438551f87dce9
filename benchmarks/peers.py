"""This project's server against the model servers people would pick instead, on the same
model, machine and load (issue 45).

Each peer serves version N's OpenVINO copy (``--variant``) from a small app of its own under
``benchmarks/peer_apps/``, written as the peer's documentation recommends for batched CPU
inference, with the peer's own batching on at the same maximum batch size (16), and the
project's own loading and decoding (``benchmarks/peer_apps/common.py``: the same OpenVINO threads
and one stream, ``app.png``/``app.images``). Each peer is installed by this script into a venv
of its own under ``--venvs`` (its package pinned; the project there without its dependencies,
and this venv's packages visible behind the peer's own, so that only what the peer needs
differently is installed); a peer that cannot install is reported skipped, with pip's reason.
Ray Serve runs this project's own application (``deploy/ray/serve.yaml``, one node, one
replica: ``benchmarks/ray_serve.py``) from this venv.

Peers that speak only the Open Inference Protocol (MLServer: V2 JSON, the PNG base64 in a
``BYTES`` tensor; PyTriton: Triton's binary-data extension) are sent those requests instead of
uploads, and this server is measured on the same requests too (``server (v2-json)``...): each
peer is compared with this server sent what it was sent.

First every target answers the ten samples, four times each, all at once (so that its
batching joins them), and each answer is compared with this server's for that sample alone:
the same top class and every probability within ``PROBABILITY_TOLERANCE`` (a peer whose
answers differ is reported, not ranked); then ``wrk`` posts the test images to each in
interleaved rounds at each connection count: medians of requests/s (successful answers only),
p50 and p99, CPU seconds of the target's processes (all of them: a peer's worker processes, a
Ray node) per answer wrk counted, the peak RSS of those processes summed (sampled every 0.2 s;
shared pages counted in each) and their PSS summed at each run's end (shared pages split),
wrk's errors summed over the rounds (no ratio where there was one). Before each run every target's
CPU is back to its idle level, and the others that poll while idle (LitServe) are paused
(SIGSTOP; not Ray's processes, whose heartbeats a pause would miss: their idle CPU is
reported). Stop a training run
first (SIGSTOP). ``--table F`` prints a saved report (``--json F``) as docs/benchmarks.md's
table.

    .venv/bin/python benchmarks/peers.py --data /var/tmp/cifar10-data/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cpu import cpu_report  # noqa: E402
from benchmarks.ray_serve import cluster_processes, start_ray, wrk  # noqa: E402
from benchmarks.serving import png_payloads, start_server  # noqa: E402
from deploy.local_server import free_port, multipart_body  # noqa: E402
from tests.helpers import stop_ray_cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "samples").glob("*.png"))


# How a target is sent an image, and where: what each peer's documentation makes its way (an
# upload, or the Open Inference Protocol where that is all the peer speaks); this server is
# measured in every way a chosen peer is, and each peer is compared with it in its own way.
MULTIPART, V2_JSON, V2_BINARY = "multipart", "v2-json", "v2-binary"


@dataclass(frozen=True)
class Peer:
    name: str
    packages: tuple[str, ...]  # pinned, as the issue names them (and any fix they need)
    app: str  # the module under benchmarks/peer_apps/ that serves the model
    protocol: str = MULTIPART


PEERS = {
    "litserve": Peer("litserve", ("litserve==0.2.19",), "benchmarks.peer_apps.litserve_app"),
    "bentoml": Peer("bentoml", ("bentoml==1.4.40",), "benchmarks.peer_apps.bentoml_app"),
    # MLServer 1.7.1's worker calls ``asyncio.get_event_loop()`` with no loop set, which
    # uvloop 0.22 and later (this project's) refuse: its worker died at start (measured)
    "mlserver": Peer(
        "mlserver",
        ("mlserver==1.7.1", "uvloop==0.21.0"),
        "benchmarks.peer_apps.mlserver_app",
        V2_JSON,
    ),
    "pytriton": Peer(
        "pytriton", ("nvidia-pytriton==0.7.0",), "benchmarks.peer_apps.pytriton_app", V2_BINARY
    ),
}
RAY_SERVE = "ray_serve"
# The same model and runtime give the same probabilities but for rounding, which may differ
# with the batch an image is computed in; a larger difference is another model or decoding.
PROBABILITY_TOLERANCE = 0.01
# A target taking more CPU than this idle polls (LitServe: 0.13 of a core): it is paused while
# the others are measured.
POLLING_CPU = 0.02


def ensure_venv(peer: Peer, venvs: Path) -> tuple[Path | None, str]:
    """The peer's venv's python, made if missing; ``(None, reason)`` if it cannot be."""
    venv = venvs / peer.name
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    wanted = "\n".join(peer.packages)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python, ""
    shutil.rmtree(venv, ignore_errors=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if made.returncode != 0:
        return None, f"python -m venv failed: {made.stderr.strip()[-600:]}"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    # this venv's packages behind the peer's own: pip installs only what the peer needs anew
    (site / "zz_project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    for argv in (list(peer.packages), ["--no-deps", "-e", str(ROOT)]):
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *argv],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return None, f"pip install {' '.join(argv)} failed: {done.stderr.strip()[-600:]}"
    marker.write_text(wanted)
    return python, ""


def start_peer(peer: Peer, python: Path, model_dir: Path, variant: str, batch: int, log: Path):
    """The peer's app on a free port, its output to ``log`` (a pipe nobody reads would fill
    and block it), its temporary files beside the log (removed with them)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(python), "-m", peer.app, "--model-dir", str(model_dir), "--variant", variant]
        + ["--port", str(port), "--max-batch-size", str(batch), "--model-name", model_dir.name],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(log.parent)},
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    return proc, port


def inference_path(protocol: str, model_name: str) -> str:
    return "/predict" if protocol == MULTIPART else f"/v2/models/{model_name}/infer"


def request_of(protocol: str, png: bytes) -> tuple[bytes, dict[str, str]]:
    """One image's request body and headers: an upload (field ``file``), or an Open Inference
    Protocol request with the PNG as a ``BYTES`` tensor (base64 in JSON, or raw with Triton's
    binary-data extension), the answer's ``probabilities`` in JSON."""
    if protocol == MULTIPART:
        body, content_type = multipart_body("file", "x.png", png)
        return body, {"Content-Type": content_type}
    if protocol == V2_JSON:
        tensor = {"name": "image", "shape": [1], "datatype": "BYTES"}
        body = json.dumps({"inputs": [tensor | {"data": [base64.b64encode(png).decode()]}]})
        return body.encode(), {"Content-Type": "application/json"}
    blob = struct.pack("<I", len(png)) + png  # a BYTES element: its length, then its bytes
    tensor = {"name": "image", "shape": [1, 1], "datatype": "BYTES"}
    header = json.dumps({"inputs": [tensor | {"parameters": {"binary_data_size": len(blob)}}]})
    return header.encode() + blob, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header.encode())),
    }


def write_requests(folder: Path, protocol: str, payloads: list[bytes]) -> Path:
    """The request bodies for ``wrk_upload.lua``, each with its headers."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, png in enumerate(payloads):
        body, headers = request_of(protocol, png)
        (folder / f"body_{i}").write_bytes(body)
        (folder / f"type_{i}").write_text(headers.pop("Content-Type"))
        if headers:
            (folder / f"headers_{i}").write_text("".join(f"{k}: {v}\n" for k, v in headers.items()))
    return folder


def probabilities_of(protocol: str, answer, names: list[str]) -> list[float]:
    """One answer's probabilities in class order: ``/predict``'s (BentoML answers a list of
    the one answer, as a batchable API answers the list it was sent), or the Open Inference
    Protocol's ``probabilities`` output."""
    if protocol == MULTIPART:
        one = answer[0] if isinstance(answer, list) and len(answer) == 1 else answer
        return [float(one["probabilities"][name]) for name in names]
    (data,) = [o["data"] for o in answer["outputs"] if o["name"] == "probabilities"]
    if len(data) != len(names):
        raise ValueError(f"{len(data)} probabilities for {len(names)} classes")
    return [float(p) for p in data]


def answers_of(
    port: int,
    names: list[str] | None = None,
    path: str = "/predict",
    protocol: str = MULTIPART,
    timeout: float = 300,
    proc=None,
    log: Path | None = None,
    repeat: int = 4,
) -> list[list[list[float]]]:
    """Each sample's probabilities, ``repeat`` times: the first sample sent until the target
    answers (a connection refused, 503 or 404, while it starts; a V2 model's ``/ready`` first),
    then every sample ``repeat`` times at once, so that the target's batching joins them and
    must give each request its own answer; ``names``, the classes in output order (``None``:
    ask this server, at ``port``). Any other status, or an answer not understood, raises
    ``RuntimeError``."""
    bodies = [request_of(protocol, sample.read_bytes()) for sample in SAMPLES]
    deadline, last = time.monotonic() + timeout, "nothing"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

        def ask(i: int) -> list[float]:
            r = client.post(path, content=bodies[i][0], headers=bodies[i][1])
            if r.status_code != 200:
                raise RuntimeError(f"answered {r.status_code}: {r.text[:500]}")
            try:
                return probabilities_of(protocol, r.json(), names or class_names(port))
            except (KeyError, TypeError, ValueError) as exc:
                raise RuntimeError(f"answer not understood ({exc!r}): {r.text[:500]}") from exc

        while True:
            if proc is not None and proc.poll() is not None:
                output = log.read_text(errors="replace")[-2000:] if log else ""
                raise RuntimeError(f"exited {proc.returncode}: {output}")
            try:
                # the Open Inference Protocol's own readiness first (MLServer answers 400 to
                # a model still loading)
                ready = 200 if protocol == MULTIPART else _ready(client, path)
                if ready == 200:
                    ask(0)
                    break
                last = f"{path.removesuffix('/infer')}/ready answered {ready}"
            except httpx.HTTPError:
                pass
            except RuntimeError as exc:
                # while it starts: no model yet (503), or no route yet (Ray Serve's 404)
                if not str(exc).startswith(("answered 503", "answered 404")):
                    raise
                last = str(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer from port {port} within {timeout:g} s: {last}")
            time.sleep(1)
        order = [i for _ in range(repeat) for i in range(len(SAMPLES))]
        with ThreadPoolExecutor(len(order)) as pool:
            answers = list(pool.map(ask, order))
    return [[a for i, a in zip(order, answers, strict=True) if i == s] for s in range(len(SAMPLES))]


def top(probabilities: list[float]) -> int:
    return max(range(len(probabilities)), key=probabilities.__getitem__)


def _ready(client: httpx.Client, path: str) -> int:
    """The status of the V2 model's readiness (``.../ready`` beside ``.../infer``)."""
    return client.get(path.removesuffix("/infer") + "/ready").status_code


def compare(answers, reference, names: list[str]) -> dict:
    """A target's answers against this server's (each sample's first answer): the top class
    of every answer, and the largest difference of any probability (the same model may round
    a little differently in another batch); ``labels``: each sample's first answer's class."""
    diff = max(
        abs(x - y)
        for per, ref in zip(answers, reference, strict=True)
        for a in per
        for x, y in zip(a, ref[0], strict=True)
    )
    pairs = list(zip(answers, reference, strict=True))
    same = all(top(a) == top(ref[0]) for per, ref in pairs for a in per)
    return {
        "labels_match_server": same and diff <= PROBABILITY_TOLERANCE,
        "max_abs_diff": diff,
        "labels": [names[top(per[0])] for per in answers],
    }


def class_names(port: int) -> list[str]:
    """The model's classes in output order, from this server's ``/predict`` answer."""
    body, headers = request_of(MULTIPART, SAMPLES[0].read_bytes())
    r = httpx.post(f"http://127.0.0.1:{port}/predict", content=body, headers=headers, timeout=30)
    r.raise_for_status()
    return list(r.json()["probabilities"])


class Watch:
    """CPU seconds and peak summed RSS of the processes ``procs()`` names when it starts (all
    of a target's by the time it is measured: it has answered the samples)."""

    def __init__(self, procs) -> None:
        fixed = procs()
        self.procs, self.peak_rss, self._stop = (lambda: fixed), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_rss = max(self.peak_rss, _sum(self.procs(), "rss"))

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _sum(procs: list[psutil.Process], field: str) -> int:
    """``field`` of ``memory_info`` (``rss``) or, for ``pss``, of ``memory_full_info`` (shared
    pages split between the processes that map them), summed."""
    total = 0
    for p in procs:
        try:
            info = p.memory_full_info() if field == "pss" else p.memory_info()
            total += getattr(info, field)
        except psutil.Error:
            pass
    return total


def settle(procs, idle: float, limit_s: float = 10.0) -> bool:
    """Wait until the processes are back to their idle CPU (what the last run left queued is
    done), at most ``limit_s``; whether they were."""
    deadline = time.monotonic() + limit_s
    while idle_cpu(procs, 0.5) > idle + 0.1:
        if time.monotonic() > deadline:
            return False
    return True


def signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass


def end_tree(pid: int) -> None:
    """End a target and every process under it (a peer's workers outlive a parent that
    only gets SIGTERM): SIGTERM, then SIGKILL after 30 s."""
    procs = tree(pid)()
    signal_all(procs, signal.SIGCONT)
    signal_all(procs, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=30)
    signal_all(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)


def idle_cpu(procs, seconds: float = 3.0) -> float:
    """CPU seconds per second the target's processes take with no request."""
    watch = Watch(procs)
    before = watch.cpu_s()
    time.sleep(seconds)
    used = watch.cpu_s() - before
    watch.stop()
    return used / seconds


def tree(pid: int):
    def procs() -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    return procs


@dataclass
class Target:
    port: int
    path: str  # where it is sent images
    protocol: str  # how: MULTIPART, V2_JSON or V2_BINARY
    procs: Callable[[], list[psutil.Process]]  # all its processes
    proc: subprocess.Popen | None = None  # what this script started (None: Ray's cluster)
    log: Path | None = None


def processes_of(targets: dict[str, Target], names: list[str]):
    """The processes of these targets, each once (this server's targets share one)."""

    def procs() -> list[psutil.Process]:
        return list({p.pid: p for n in names for p in targets[n].procs()}.values())

    return procs


def server_name(protocol: str) -> str:
    """This server's target for a protocol: ``server`` for uploads, ``server (v2-json)``..."""
    return "server" if protocol == MULTIPART else f"server ({protocol})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=ROOT / "models" / "cifar10-resnet50")
    ap.add_argument("--variant", default="openvino:int8")
    ap.add_argument("--peers", default=",".join([*PEERS, RAY_SERVE]))
    ap.add_argument("--venvs", type=Path, default=Path("/var/tmp/cifar10-peers"))
    ap.add_argument("--data", help="CIFAR-10 python folder (default: the ten samples)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--clients", default="1,32,128")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--table", type=Path, help="print a saved report (--json) as markdown")
    args = ap.parse_args()
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    model_dir = args.model_dir.resolve()
    wanted = [p for p in args.peers.split(",") if p]
    unknown = set(wanted) - {*PEERS, RAY_SERVE}
    if unknown:
        ap.error(f"unknown peers: {sorted(unknown)} (known: {[*PEERS, RAY_SERVE]})")
    if RAY_SERVE in wanted and args.max_batch_size != 16:
        ap.error("ray_serve serves deploy/ray/serve.yaml's max_batch_size, 16")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the cleanup below still runs
    temp_dir = tempfile.mkdtemp(prefix="peers-", dir="/tmp")
    payloads = png_payloads(args.data, args.images)
    report: dict = {
        "cpu": cpu_report(),
        "commit": _commit(),
        "packages": {name: list(PEERS[name].packages) for name in wanted if name in PEERS}
        | (
            {RAY_SERVE: [f"ray=={importlib.metadata.version('ray')}"]}
            if RAY_SERVE in wanted
            else {}
        ),
        "variant": args.variant,
        "skipped": {},
        "unsettled_runs": [],  # runs started before every target was back to idle (10 s)
        "targets": {},
    }
    peers: dict[str, Target] = {}
    started: list[subprocess.Popen] = []  # ended at the end, whatever happened
    gcs = None
    try:
        server, port = start_server(
            model_dir, args.variant, batch_cap=args.max_batch_size, streams=1
        )
        started.append(server)
        for name in wanted:
            if name == RAY_SERVE:
                gcs = free_port()
                ray_port, _, _ = start_ray(
                    model_dir, args.variant, temp_dir, os.cpu_count() or 1, gcs, None
                )
                procs = lambda: cluster_processes(temp_dir)  # noqa: E731
                peers[name] = Target(ray_port, "/predict", MULTIPART, procs)
                continue
            peer = PEERS[name]
            python, reason = ensure_venv(peer, args.venvs)
            if python is None:
                report["skipped"][name] = reason
                continue
            log = Path(temp_dir) / name / "output.log"
            log.parent.mkdir()
            proc, peer_port = start_peer(
                peer, python, model_dir, args.variant, args.max_batch_size, log
            )
            started.append(proc)
            path = inference_path(peer.protocol, model_dir.name)
            peers[name] = Target(peer_port, path, peer.protocol, tree(proc.pid), proc, log)
        # this server failing is an error, not a skip
        reference = answers_of(port, proc=server)
        names = class_names(port)
        answers = {}
        for name, t in list(peers.items()):
            try:
                answers[name] = answers_of(
                    t.port, names, t.path, t.protocol, proc=t.proc, log=t.log
                )
            except RuntimeError as exc:
                report["skipped"][name] = f"did not serve: {exc}"
                del peers[name]
        # this server measured in each way a peer that serves is
        targets: dict[str, Target] = {}
        for protocol in [MULTIPART] + sorted({t.protocol for t in peers.values()} - {MULTIPART}):
            path = inference_path(protocol, model_dir.name)
            targets[server_name(protocol)] = Target(port, path, protocol, tree(server.pid), server)
            answers[server_name(protocol)] = answers_of(port, names, path, protocol)
        targets |= peers
        requests = {
            protocol: write_requests(Path(temp_dir) / f"requests-{protocol}", protocol, payloads)
            for protocol in {t.protocol for t in targets.values()}
        }
        idle = {name: idle_cpu(t.procs) for name, t in targets.items()}
        pollers = {n for n in targets if idle[n] > POLLING_CPU and n != RAY_SERVE}
        rounds: dict = {t: {c: [] for c in args.clients.split(",")} for t in targets}
        order = list(targets)
        for _ in range(args.rounds):  # interleaved: the machine's drift hits all alike
            for clients in args.clients.split(","):
                for name in [n for n in order if n in targets]:
                    t = targets[name]
                    # every target back to idle (what the last run left queued is done),
                    # then the ones that poll while idle paused (LitServe; not Ray's many
                    # processes, whose heartbeats a pause would miss, nor one that sits still:
                    # PyTriton's watchdog stops Triton after a pause of a minute, measured)
                    own = {p.pid for p in t.procs()}
                    paused = {
                        p.pid: p
                        for other, o in targets.items()
                        if other in pollers
                        for p in o.procs()
                        if p.pid not in own
                    }.values()
                    quiet = [n for n in targets if n not in pollers or n == name]
                    # (this server's targets share one process: its idle CPU counted once)
                    idle_sum = sum(idle[n] for n in quiet if n in peers or n == "server")
                    if not settle(processes_of(targets, quiet), idle_sum):
                        report["unsettled_runs"].append(f"{name} at {clients} connections")
                    signal_all(paused, signal.SIGSTOP)
                    watch = Watch(t.procs)
                    before = watch.cpu_s()
                    try:
                        result = wrk(
                            t.port, requests[t.protocol], int(clients), args.seconds, t.path
                        )
                    except RuntimeError as exc:
                        watch.stop()
                        signal_all(paused, signal.SIGCONT)
                        if t.proc is server:
                            raise
                        output = t.log.read_text(errors="replace")[-1500:] if t.log else ""
                        report["skipped"][name] = (
                            f"failed at {clients} connections: {exc}; {output}"
                        )
                        del targets[name], rounds[name]
                        if t.proc is not None:  # (Ray's cluster is stopped at the end)
                            end_tree(t.proc.pid)  # nothing of it left to poll or spin
                        continue
                    cpu = watch.cpu_s() - before
                    watch.stop()
                    answered = result["requests"]  # wrk's count of answers
                    result["cpu_ms_per_request"] = 1000 * cpu / answered if answered else None
                    result["peak_rss_mib"] = watch.peak_rss / 2**20
                    result["pss_mib"] = _sum(watch.procs(), "pss") / 2**20
                    signal_all(paused, signal.SIGCONT)
                    rounds[name][clients].append(result)
                order = order[1:] + order[:1]  # each target first in turn, then last
        for name, by_clients in rounds.items():
            t = targets[name]
            report["targets"][name] = {
                "protocol": t.protocol,
                "path": t.path,
                "idle_cpu_per_s": idle[name],
                **compare(answers[name], reference, names),
                "by_connections": {
                    clients: summary(results) for clients, results in by_clients.items()
                },
            }
        add_ratios(report)
        text = json.dumps(_rounded(report), indent=1)
        print(text)
        if args.json:
            args.json.write_text(text)
    finally:
        for proc in started:
            end_tree(proc.pid)
            proc.wait()
        if gcs is not None:
            stop_ray_cluster(temp_dir, gcs)
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


def summary(results: list[dict]) -> dict:
    """One target's rounds at one connection count: medians (of the rounds that have the
    figure: a round with no answer has no CPU per answer), errors summed, memory at its
    largest."""

    def median(key: str) -> float | None:
        values = [r[key] for r in results if r[key] is not None]
        return statistics.median(values) if values else None

    return {
        **{key: median(key) for key in ("throughput", "p50_ms", "p99_ms", "cpu_ms_per_request")},
        "errors": sum(r["errors"] for r in results),  # in all the rounds
        "errors_per_round": [r["errors"] for r in results],
        "throughput_per_round": [r["throughput"] for r in results],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
        "pss_mib": max(r["pss_mib"] for r in results),
    }


def add_ratios(report: dict) -> None:
    """Each target's figures over this server's sent the same requests (``over_server``), at
    each connection count where neither had an error; none for a target whose answers differ
    from this server's (reported, not ranked)."""
    for target in report["targets"].values():
        if not target["labels_match_server"]:
            continue
        server = report["targets"][server_name(target["protocol"])]["by_connections"]
        target["over_server"] = {
            clients: {
                "throughput": m["throughput"] / server[clients]["throughput"],
                "p50": m["p50_ms"] / server[clients]["p50_ms"],
                "p99": m["p99_ms"] / server[clients]["p99_ms"],
            }
            for clients, m in target["by_connections"].items()
            if m["errors"] == 0 and server[clients]["errors"] == 0 and m["throughput"]
        }


NAMES = {
    "litserve": "LitServe",
    "bentoml": "BentoML",
    "mlserver": "MLServer",
    "pytriton": "PyTriton",
    RAY_SERVE: "Ray Serve (this app)",
}
SENT = {MULTIPART: "uploads", V2_JSON: "V2 JSON", V2_BINARY: "V2 binary"}


def markdown_table(report: dict) -> str:
    """The report as docs/benchmarks.md's table: each target's medians, each peer's ratio to
    this server sent the same requests (in brackets), errors summed over the rounds, memory
    at its largest."""
    lines = [
        "| target | sent | connections | req/s (ratio) | p50 (ratio) | p99 (ratio) "
        "| CPU ms/request | errors | PSS | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def shown(value: float | None, ratio: float | None = None, unit: str = "") -> str:
        if value is None:
            return "-"
        text = f"{value:,.1f}{unit}" if value < 100 else f"{value:,.0f}{unit}"
        return text if ratio is None or ratio == 1 else f"{text} ({ratio:.2f})"

    for name, t in report["targets"].items():
        if name.startswith("server"):
            label = "this server"
        else:
            version = PEERS[name].packages[0].partition("==")[2] if name in PEERS else ""
            label = f"{NAMES.get(name, name)} {version}".strip()
        if not t["labels_match_server"]:
            label += " (answers differ: not ranked)"
        memory = [
            max(m[key] for m in t["by_connections"].values()) for key in ("pss_mib", "peak_rss_mib")
        ]
        for i, (clients, m) in enumerate(t["by_connections"].items()):
            ratio = t.get("over_server", {}).get(clients, {})
            first = i == 0
            lines.append(
                f"| {label if first else ''} | {SENT[t['protocol']] if first else ''} | {clients} "
                f"| {shown(m['throughput'], ratio.get('throughput'))} "
                f"| {shown(m['p50_ms'], ratio.get('p50'), ' ms')} "
                f"| {shown(m['p99_ms'], ratio.get('p99'), ' ms')} "
                f"| {shown(m['cpu_ms_per_request'])} | {m['errors']} "
                + (f"| {memory[0]:,.0f} MiB | {memory[1]:,.0f} MiB |" if first else "| | |")
            )
    return "\n".join(lines)


def _commit() -> str:
    """This tree's commit, ``+`` where it has changes not committed."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
    )
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def _rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
