#!/usr/bin/env bash
# Build the API image with podman, on machines that cannot pull its base images.
#
#   deploy/podman_build.sh standins        # stand-ins for the base images, from Debian's packages
#   deploy/podman_build.sh api [TAG]       # the API image (default tag cifar10-api:latest)
#   deploy/podman_build.sh wheelhouse DIR  # every wheel the image installs, for offline builds
#
# `standins` makes two local images, never under the upstream names:
#   localhost/cifar10-standin-python:3.11-bookworm   for python:3.11-slim-bookworm
#     (Debian's python3 in a venv at /usr/local, so `python` and `pip` are on the PATH)
#   localhost/cifar10-standin-prometheus:bookworm     for prom/prometheus
#     (Debian's prometheus package, same entrypoint, flags, user and data folder)
# Each comes from `debootstrap --variant=minbase` (needs root and a Debian mirror; MIRROR
# overrides http://deb.debian.org/debian) and `podman import`. An image already present is kept;
# REBUILD=1 makes it again.
#
# `api` runs `podman build --format docker` (so HEALTHCHECK is kept) on the repository, with
# BASE_IMAGE as the build argument when it is set. Behind a TLS-inspecting proxy the build's
# `pip install` must trust the proxy's CA: the host's bundle (CA_BUNDLE, by default
# /etc/ssl/certs/ca-certificates.crt) is mounted read-only into the build with a pip.conf naming
# it. Neither lands in the image (podman leaves the empty mount point /etc/pip.conf, which sets
# nothing; tests/e2e/test_container.py checks both). With WHEELHOUSE=DIR (made by `wheelhouse DIR` where
# the index is reachable) the build has no network at all and pip installs from DIR alone.
# NO_CACHE=1 builds every step again (a cached step would not show that it builds offline).
#
# On a machine whose kernel has the hybrid cgroup layout and low rlimits (CI's), podman needs
#   export CONTAINERS_CONF=$PWD/deploy/podman/containers.conf
# (runc, cgroupfs, lower default ulimits); elsewhere podman's own configuration is used.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY_STANDIN=localhost/cifar10-standin-python:3.11-bookworm
PROM_STANDIN=localhost/cifar10-standin-prometheus:bookworm
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

have_image() { [ "${REBUILD:-0}" != 1 ] && podman image exists "$1"; }

# A minimal Debian root with the given packages, without apt's caches, docs and locales.
bootstrap() {
  local dir=$1 packages=$2
  debootstrap --variant=minbase --include="$packages" bookworm "$dir" "$MIRROR" >"$dir.log" 2>&1 \
    || { tail -20 "$dir.log" >&2; echo "debootstrap failed: its last lines are above" >&2; return 1; }
  rm -rf "$dir"/var/cache/apt/* "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* \
    "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
}

# (a subshell: its EXIT trap removes the half-made roots however it ends)
standins() (
  [ "$(id -u)" = 0 ] || { echo "standins needs root (debootstrap, chroot)" >&2; exit 1; }
  command -v debootstrap >/dev/null \
    || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  work="$(mktemp -d "${TMPDIR:-/var/tmp}/cifar10-standins.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  if have_image "$PY_STANDIN"; then
    echo "$PY_STANDIN: present"
  else
    echo "$PY_STANDIN: debootstrap python3 ..."
    bootstrap "$work/python" python3,python3-venv,ca-certificates
    chroot "$work/python" python3 -m venv /usr/local
    tar -C "$work/python" -c . | podman import \
      --change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      --message "stand-in for python:3.11-slim-bookworm (deploy/podman_build.sh)" \
      - "$PY_STANDIN" >/dev/null
    echo "$PY_STANDIN: built"
  fi
  if have_image "$PROM_STANDIN"; then
    echo "$PROM_STANDIN: present"
  else
    echo "$PROM_STANDIN: debootstrap prometheus ..."
    bootstrap "$work/prometheus" prometheus,ca-certificates
    # prom/prometheus runs /bin/prometheus as nobody in /prometheus, reading
    # /etc/prometheus/prometheus.yml (the file compose mounts).
    mkdir -p "$work/prometheus/prometheus"
    chown 65534:65534 "$work/prometheus/prometheus"
    tar -C "$work/prometheus" -c . | podman import \
      --change 'USER nobody' \
      --change 'WORKDIR /prometheus' \
      --change 'EXPOSE 9090' \
      --change 'ENTRYPOINT ["/usr/bin/prometheus"]' \
      --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
      --message "stand-in for prom/prometheus (deploy/podman_build.sh)" \
      - "$PROM_STANDIN" >/dev/null
    echo "$PROM_STANDIN: built"
  fi
  echo "use them with: BASE_IMAGE=$PY_STANDIN PROMETHEUS_IMAGE=$PROM_STANDIN"
)

api() {
  local tag=${1:-cifar10-api:latest}
  local args=(build --format docker -t "$tag")
  [ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  [ "${NO_CACHE:-0}" = 1 ] && args+=(--no-cache)
  if [ -n "${WHEELHOUSE:-}" ]; then
    # Offline: no network in the build at all; pip takes everything from the wheelhouse.
    args+=(--network none -v "$(cd "$WHEELHOUSE" && pwd):/wheels:ro"
      -v "$ROOT/deploy/podman/pip-offline.conf:/etc/pip.conf:ro")
  else
    args+=(--network host)
    if [ -r "$CA_BUNDLE" ]; then
      args+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"
        -v "$ROOT/deploy/podman/pip.conf:/etc/pip.conf:ro")
    fi
  fi
  podman "${args[@]}" "$ROOT"
}

# Every wheel the image's `pip install` steps need (the project's own build backend included),
# for WHEELHOUSE: run where the package index is reachable, with the image's Python (3.11).
wheelhouse() {
  local dest=${1:?wheelhouse DIR}
  mkdir -p "$dest"
  local python=${PYTHON:-python3} backend
  # the project's build backend, as pyproject.toml's [build-system] names it
  backend=$("$python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' "$ROOT/pyproject.toml")
  mapfile -t backend <<<"$backend"
  "$python" -m pip download --quiet --only-binary=:all: --dest "$dest" "$ROOT" "${backend[@]}" wheel
  rm -f "$dest"/cifar10_resnet50_service-*  # built from the source in the image, not taken
  echo "$(ls "$dest" | wc -l) wheels in $dest"
}

case "${1:-}" in
  standins) standins ;;
  api) shift; api "$@" ;;
  wheelhouse) shift; wheelhouse "$@" ;;
  *) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
