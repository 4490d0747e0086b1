#!/usr/bin/env bash
# Start (or stop) a Docker engine for the tests: installs docker.io when missing (root),
# starts dockerd in the background and waits until it answers. No image registry is
# needed: base images are built locally (base-image.sh).
#   packaging/docker/engine.sh start|stop|status
set -euo pipefail
STATE=${MLOPS_DOCKER_STATE:-/tmp/mlops-ci}
mkdir -p "$STATE"
case "${1:-start}" in
  start)
    if docker info >/dev/null 2>&1; then echo "docker engine: already running"; exit 0; fi
    if ! command -v dockerd >/dev/null 2>&1; then
      if [ "$(id -u)" != 0 ]; then echo "docker engine: not installed and not root; cannot start" >&2; exit 1; fi
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
    fi
    nohup dockerd --host unix:///var/run/docker.sock >"$STATE/dockerd.log" 2>&1 &
    echo $! >"$STATE/dockerd.pid"
    for _ in $(seq 300); do docker info >/dev/null 2>&1 && { echo "docker engine: started"; exit 0; }; sleep 0.1; done
    echo "docker engine: did not start; see $STATE/dockerd.log" >&2; tail -20 "$STATE/dockerd.log" >&2; exit 1 ;;
  stop)
    if [ -f "$STATE/dockerd.pid" ]; then
      ids=$(docker ps -aq --filter label=mlops-console 2>/dev/null || true)
      [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1 || true
      kill "$(cat "$STATE/dockerd.pid")" 2>/dev/null || true
      rm -f "$STATE/dockerd.pid"
      echo "docker engine: stopped"
    fi ;;
  status) docker info >/dev/null 2>&1 && echo running || { echo "not running"; exit 1; } ;;
esac
