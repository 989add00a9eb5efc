#!/usr/bin/env bash
# Build deploy/Dockerfile with podman where no container registry can be reached:
# the base image (Debian bookworm + Python 3.11) is made from Debian packages with
# debootstrap, and torch comes from a local wheel directory when one is configured.
#
#   scripts/build_image.sh [IMAGE]      (default: inference-gateway:test)
#
# Environment: BASE_IMAGE (default inference-gateway-base:bookworm-slim-1, built once),
# WHEELS (a directory holding the CPU torch wheel; default: pip's find-links, if any),
# DEBIAN_MIRROR (default http://deb.debian.org/debian).
# podman quirks of some hosts, always passed: --runtime runc (crun rejects hybrid
# cgroups), explicit ulimits, host networking.
set -euo pipefail
image=${1:-inference-gateway:test}
# The tag changes with the recipe below, so that a machine with an older base builds anew.
base=${BASE_IMAGE:-inference-gateway-base:bookworm-slim-1}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(cd "$(dirname "$0")/.." && pwd)
podman=(podman --runtime runc)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

if ! podman image exists "$base"; then
    echo "building the base image $base from Debian packages" >&2
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    debootstrap --variant=minbase bookworm "$dir" "$mirror" >/dev/null
    chroot "$dir" apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates >/dev/null
    chroot "$dir" apt-get clean
    # What a server never reads: package lists, documentation, manual pages, locales
    # (about 100 MB; the official slim images leave them out too).
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* \
        "$dir"/usr/share/locale/*
    ln -sf /usr/bin/python3.11 "$dir/usr/local/bin/python"
    tar -C "$dir" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base" >/dev/null
fi

wheels=${WHEELS:-$(pip config get global.find-links 2>/dev/null || true)}
build_args=(--build-arg "BASE_IMAGE=$base")
volumes=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    # pip (certifi) does not read the system store: hand it this machine's bundle.
    volumes+=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
    build_args+=(--build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
if [ -n "$wheels" ] && ls "$wheels"/torch-2.13.0*.whl >/dev/null 2>&1; then
    volumes+=(-v "$wheels:/wheels:ro")
    # The local wheel (2.13.0+cpu) ranks above the index's 2.13.0; its dependencies come
    # from the index.
    build_args+=(--build-arg "TORCH_PIP_ARGS=--find-links /wheels")
fi
"${podman[@]}" build "${limits[@]}" --network host "${volumes[@]}" "${build_args[@]}" \
    -f "$root/deploy/Dockerfile" -t "$image" "$root"
