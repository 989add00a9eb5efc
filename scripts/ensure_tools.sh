#!/usr/bin/env bash
# Make sure the named Debian packages are installed (wrk, prometheus, chromium-driver, ...).
# Installs them with apt-get when missing and this user can; otherwise says how.
set -euo pipefail
missing=()
for tool in "$@"; do
    # The Debian package's name, and the binary that shows it is installed.
    case "$tool" in
        prometheus) binary="promtool" ;;
        chromium-driver) binary="chromedriver" ;;
        iproute2) binary="ip" ;;
        *) binary="$tool" ;;
    esac
    command -v "$binary" >/dev/null 2>&1 || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing tools: ${missing[*]}; install them with your package manager" >&2
    exit 1
fi
echo "installing ${missing[*]} from Debian packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
}
