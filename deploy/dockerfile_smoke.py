"""Run the Dockerfile's install and start steps outside Docker (no engine on CI machines).

Reads the Dockerfile itself: its ENV values, its COPY steps (into a fresh folder standing for
the image's WORKDIR, so only what the image holds is there), its ``pip install`` steps (run
there, in a fresh virtualenv), its CMD (started with that environment) and its HEALTHCHECK
command (polled until the server reports ready). Then one real prediction, a check that the
image holds neither TensorFlow nor the training code, the installed size and the server's
memory, and a clean SIGTERM shutdown.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "deploy"))

from local_server import free_port, multipart_body, wait_until_ready  # noqa: E402


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def copy_step(rest: str, workdir: Path) -> None:
    """``COPY [--chown=...] SRC... DEST`` from the repository into ``workdir``."""
    parts = [p for p in shlex.split(rest) if not p.startswith("--")]
    *sources, dest = parts
    target = workdir / dest if dest not in (".", "./") else workdir
    for src in sources:
        path = ROOT / src
        into = target / path.name if len(sources) > 1 or dest.endswith("/") else target
        if path.is_dir():
            shutil.copytree(path, into, dirs_exist_ok=True)
        else:
            into.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, into)
    print("+ COPY", rest, flush=True)


def image_contents_check(venv: Path) -> None:
    """The serving image installs neither TensorFlow nor the training package."""
    python = str(venv / "bin" / "python")
    for module in ("tensorflow", "training", "matplotlib"):
        found = subprocess.run(
            [
                python,
                "-c",
                f"import importlib.util as u; print(u.find_spec('{module}') is not None)",
            ],
            capture_output=True,
            text=True,
            cwd=tempfile.gettempdir(),
            check=True,
        ).stdout.strip()
        if found != "False":
            raise SystemExit(f"the serving image should not contain {module}")
    site = next((venv / "lib").glob("python*/site-packages"))
    size = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    print(f"installed packages: {size / 2**20:.0f} MiB (no tensorflow, training, matplotlib)")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    steps = dockerfile_instructions()
    env = dict(os.environ)
    for op, rest in steps:
        if op == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
    port = free_port()
    env["CIFAR10_PORT"] = str(port)
    env["CIFAR10_HOST"] = "127.0.0.1"  # outside a container: loopback only

    scratch = Path(tempfile.mkdtemp(prefix="docker-steps-"))
    venv, workdir = scratch / "venv", scratch / "app"
    workdir.mkdir()
    env["CIFAR10_MODEL_DIR"] = str(workdir / os.path.relpath(env["CIFAR10_MODEL_DIR"], "/app"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    for op, rest in steps:
        if op == "COPY":
            copy_step(rest, workdir)
        if op != "RUN":
            continue
        for command in rest.split("&&"):
            argv = shlex.split(command)
            if argv and argv[0] == "pip":
                print("+", command.strip(), flush=True)
                subprocess.run(
                    [str(venv / "bin" / "pip"), *argv[1:]],
                    cwd=workdir,
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
    image_contents_check(venv)
    cmd = json.loads(next(rest for op, rest in steps if op == "CMD"))
    health = next(rest for op, rest in steps if op == "HEALTHCHECK")
    health_cmd = shlex.split(health.split(" CMD ", 1)[1])
    health_cmd[0] = str(venv / "bin" / health_cmd[0])

    print("+", " ".join(cmd), flush=True)
    server = subprocess.Popen(
        [str(venv / "bin" / cmd[0]), *cmd[1:]], cwd=tempfile.gettempdir(), env=env
    )
    try:
        wait_until_ready(
            server,
            lambda: subprocess.run(health_cmd, env=env, capture_output=True).returncode == 0,
            interval=1,
        )
        print("HEALTHCHECK passed", flush=True)
        body, content_type = multipart_body(
            "file", "cat.png", (ROOT / "samples" / "cat.png").read_bytes()
        )
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=body, headers={"Content-Type": content_type}
        )
        answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
        print("predict:", answer["label"], round(answer["probability"], 3), flush=True)
        print(f"server RSS {rss_mib(server.pid):.0f} MiB", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    print("server exit code", code)  # uvicorn re-raises the SIGTERM after a graceful drain
    return 0 if code in (0, -signal.SIGTERM) else 1


if __name__ == "__main__":
    sys.exit(main())
