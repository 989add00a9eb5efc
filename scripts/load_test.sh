#!/usr/bin/env bash
# Load-test a running gateway with locust, then check the run against the SLO.
#
# Usage: scripts/load_test.sh [URL] [USERS] [SPAWN_RATE] [DURATION]
#   URL         the gateway (default http://127.0.0.1:8000); it must answer GET /ready
#   USERS       concurrent simulated users (default 10)
#   SPAWN_RATE  users started per second (default 2)
#   DURATION    run time, e.g. 60s, 5m, 1h30m (default 60s)
#
# Environment:
#   OUT_DIR           where the reports go (default loadtest/results/<UTC timestamp>)
#   SLO_P99_MS        latency objective: P99 of photo predictions below it (default 300)
#   SLO_AVAILABILITY  availability objective, a fraction (default 0.995)
#   VENV              the virtual environment to run locust from (default .venv)
#   LOADTEST_IMAGES   a folder of JPEG/PNG photos to send instead of scikit-image's
#   LOADTEST_WAIT     each user's pause between requests, MIN,MAX seconds (default 0.1,0.5)
#
# Exit status: 0 every objective met, 1 an objective missed, 2 no usable run (bad
# arguments, gateway not ready, locust failed, no statistics written).
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
}

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
esac
if [ $# -gt 4 ]; then
    usage >&2
    exit 2
fi

URL="${1:-http://127.0.0.1:8000}"
USERS="${2:-10}"
SPAWN_RATE="${3:-2}"
DURATION="${4:-60s}"
URL="${URL%/}"

fail() {
    echo "load_test: $*" >&2
    exit 2
}

[[ "$URL" =~ ^https?://[^/]+ ]] || fail "URL must start with http:// or https:// (got '$URL')"
[[ "$USERS" =~ ^[1-9][0-9]*$ ]] || fail "USERS must be a positive integer (got '$USERS')"
[[ "$SPAWN_RATE" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)$ && ! "$SPAWN_RATE" =~ ^0*\.?0*$ ]] ||
    fail "SPAWN_RATE must be a positive number (got '$SPAWN_RATE')"
[[ "$DURATION" =~ ^([0-9]+[hms]?|([0-9]+h)?([0-9]+m)?([0-9]+s)?)$ && -n "$DURATION" ]] ||
    fail "DURATION must look like 60, 60s, 5m or 1h30m (got '$DURATION')"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${OUT_DIR:-$REPO/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)}"
case "$OUT_DIR" in
/*) ;;
*) OUT_DIR="$PWD/$OUT_DIR" ;;
esac
SLO_P99_MS="${SLO_P99_MS:-300}"
SLO_AVAILABILITY="${SLO_AVAILABILITY:-0.995}"

cd "$REPO"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
[ -x "$PY" ] || fail "no Python at $PY: run 'make install-dev' (or set VENV)"

if ! "$PY" -c 'import locust' >/dev/null 2>&1; then
    echo "load_test: locust is not installed in $VENV; installing the loadtest extra" >&2
    "$PY" -m pip install --quiet -e '.[loadtest]' || fail "could not install locust"
fi

# A load test of a gateway that cannot answer measures nothing: say so at once.
"$PY" - "$URL" <<'EOF' || exit 2
import sys
import urllib.error
import urllib.request

url = sys.argv[1] + "/ready"
try:
    with urllib.request.urlopen(url, timeout=10) as response:
        status = response.status
except urllib.error.HTTPError as error:
    status = error.code
except (OSError, ValueError) as error:
    sys.exit(f"load_test: no gateway answers at {url}: {error}")
if status != 200:
    sys.exit(f"load_test: {url} answers {status}: the gateway is not ready")
EOF

mkdir -p "$OUT_DIR"
echo "load_test: $USERS users (spawn rate $SPAWN_RATE/s) for $DURATION against $URL"
echo "load_test: reports in $OUT_DIR"

status=0
"$PY" -m locust \
    --locustfile loadtest/locustfile.py \
    --headless \
    --users "$USERS" \
    --spawn-rate "$SPAWN_RATE" \
    --run-time "$DURATION" \
    --host "$URL" \
    --csv "$OUT_DIR/locust" \
    --html "$OUT_DIR/report.html" \
    --only-summary \
    --stop-timeout 10 \
    --exit-code-on-error 0 ||
    status=$?
if [ "$status" -ne 0 ]; then
    fail "locust exited with status $status; no SLO check"
fi

echo
status=0
"$PY" loadtest/slo_summary.py \
    --stats "$OUT_DIR/locust_stats.csv" \
    --p99-ms "$SLO_P99_MS" \
    --availability "$SLO_AVAILABILITY" ||
    status=$?
echo
echo "load_test: HTML report  $OUT_DIR/report.html"
echo "load_test: CSV files    $OUT_DIR/locust_*.csv"
exit "$status"
