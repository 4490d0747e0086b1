#!/usr/bin/env bash
# Build a minimal Debian bookworm image with Python 3.11 without any image registry
# (debootstrap from the Debian mirror apt already uses), once per machine.
#   packaging/docker/base-image.sh [TAG]     default tag: mlops-local/python:3.11
set -euo pipefail
TAG=${1:-mlops-local/python:3.11}
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "base image $TAG: cached"; exit 0; fi
command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
MIRROR=$(grep -hoE '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')
[ -n "$MIRROR" ] || MIRROR=$(grep -hoE '^deb\s+\S+' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
[ -n "$MIRROR" ] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }
ROOTFS=$(mktemp -d /tmp/mlops-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOTFS" "$MIRROR" >/tmp/mlops-debootstrap.log 2>&1 \
  || { tail -20 /tmp/mlops-debootstrap.log >&2; exit 1; }
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar --numeric-owner -C "$ROOTFS" -c . | docker import - "$TAG" >/dev/null
echo "base image $TAG: built"
