#!/usr/bin/env bash
# Installs what the edge-fleet tests (plugins/mlops-edge-ssh/tests) need on the test host:
# sshd for the fake devices, ip/tc for their namespaces and links, iptables for packet loss,
# zstd for the layer transfers. Idempotent and quiet: does nothing when all are there.
# CI-safe: no prompts, no stdin. Tries `apt-get install` first, `apt-get update` only if
# that fails (a fresh machine with no package lists yet).
set -euo pipefail
exec </dev/null
export DEBIAN_FRONTEND=noninteractive

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v iptables >/dev/null || need+=(iptables)
command -v zstd >/dev/null || need+=(zstd)
{ command -v ip >/dev/null && command -v tc >/dev/null; } || need+=(iproute2)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "test-host.sh: need root to install: ${need[*]}" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "test-host.sh: no apt-get; install by hand: ${need[*]}" >&2
    exit 1
fi
apt_install() {
    # policy-rc.d 101: the package must not start (or enable) a system-wide sshd
    local rc=0 prc=/usr/sbin/policy-rc.d made=0
    if [ ! -e "$prc" ]; then printf '#!/bin/sh\nexit 101\n' >"$prc" && chmod +x "$prc" && made=1; fi
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || rc=$?
    [ "$made" = 1 ] && rm -f "$prc"
    return "$rc"
}
echo "test-host.sh: installing ${need[*]}" >&2
if ! apt_install; then
    apt-get update -qq >/dev/null
    apt_install
fi
