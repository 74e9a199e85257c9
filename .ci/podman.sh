#!/usr/bin/env bash
# Podman for the container tests: podman, runc and debootstrap from Debian's packages, the engine settings
# this sandboxed host needs, and a Debian bookworm base image with Python made once by debootstrap (no
# registry is reachable here).  Safe to run again: every step checks before it acts; the base image is
# kept in podman's store and reused by every later run.
set -euo pipefail

BASE_IMAGE=${IWORKFLOW_BASE_IMAGE:-localhost/debian-python:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
CONF=/etc/containers/containers.conf.d/50-iworkflow-ci.conf

log() { echo "podman.sh: $*"; }

# --- packages -------------------------------------------------------------------------------
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing podman, runc and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update -q
    apt-get -o DPkg::Lock::Timeout=900 install -y -q podman runc debootstrap
fi

# --- engine settings ------------------------------------------------------------------------
# The sandbox refuses setrlimit (podman's default ulimits) and crun's handling of its hybrid cgroups:
# no default ulimits, runc with cgroupfs.  A drop-in, so every podman call (tests, the job runner,
# podman-compose) gets it without extra flags.
if [ ! -f "$CONF" ]; then
    log "writing $CONF"
    install -d /etc/containers/containers.conf.d
    cat > "$CONF" <<'EOF'
# written by iworkflow's .ci/podman.sh: what podman needs on the CI sandbox
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
fi

# --- base image -----------------------------------------------------------------------------
if podman image exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE is there"
    exit 0
fi
rootfs=$(mktemp -d /var/tmp/iworkflow-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log "debootstrap $SUITE (minbase + Python) into $rootfs"
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$rootfs" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log"; rm -f "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"
# trust what this host trusts: its traffic to PyPI passes a TLS-inspecting proxy whose CA is local
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
# a lean image: no package cache, lists, docs, manuals or translations
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
log "made $BASE_IMAGE in $((SECONDS - start)) s: $(podman run --rm "$BASE_IMAGE" python3 --version)"
