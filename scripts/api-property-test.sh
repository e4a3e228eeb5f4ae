#!/usr/bin/env bash
# Property-based test of the center's HTTP service from its published OpenAPI document:
# schemathesis generates requests for every operation of `/openapi.json` (valid ones, and
# ones that break the schema) against `valuecard center serve` on a fresh data directory,
# and fails on any 5xx answer and on any answer that does not match the document. Requests
# with well-formed credentials are signed for real as the installed devices
# (scripts/api_property_hooks.py), so they reach the handlers and the center.
#
#   bash scripts/api-property-test.sh
#
# VALUECARD_BIN: the valuecard binary (default target/release/valuecard, rebuilt if stale).
# API_TEST_EXAMPLES: examples per operation (default 50). API_TEST_SEED: the seed (default 1).
# API_TEST_VENV: where schemathesis is installed (default target/schemathesis-venv).
# Bounded: at most API_TEST_SECONDS (default 150) for the run itself.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION="4.32.5"
CRYPTOGRAPHY_VERSION="50.0.2"
bin="${VALUECARD_BIN:-target/release/valuecard}"
examples="${API_TEST_EXAMPLES:-50}"
seed="${API_TEST_SEED:-1}"
seconds="${API_TEST_SECONDS:-150}"
venv="${API_TEST_VENV:-target/schemathesis-venv}"

# The default binary is (re)built so that a stale one never answers for the current code; a
# binary named in VALUECARD_BIN is taken as it is.
if [ -z "${VALUECARD_BIN:-}" ]; then
  cargo build --release --quiet -p valuecard
fi
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION" \
  || ! "$venv/bin/python" -c "import cryptography" 2>/dev/null; then
  if ! python3 -m venv "$venv"; then
    # Debian's python3 keeps venv in a package of its own.
    apt-get install -y -qq python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    "cryptography==$CRYPTOGRAPHY_VERSION"
fi

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" center init --data "$work/data" > "$work/init.log"
# Port 0: the service picks a free port and names its URL on its first line.
"$bin" center serve --data "$work/data" --listen 127.0.0.1:0 > "$work/serve.out" 2> "$work/serve.log" &
server=$!
url=""
for _ in $(seq 1 100); do
  url="$(grep -o 'https://[0-9.:]*' "$work/serve.out" | head -n 1 || true)"
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "center serve did not start" >&2
  cat "$work/serve.log" >&2
  exit 1
fi
echo "center serving at $url"

# TLS is verified against the service's own certificate (it lists 127.0.0.1). The checks:
# no 5xx; every status code, content type and body as the document declares for the
# operation. (Not `positive_data_acceptance`: the document gives the shape of each field, not
# which bytes decode as a signed object, nor which dates and amounts the center accepts.)
status=0
# Run from the temporary directory, with no example database: nothing is left in the tree.
scripts="$PWD/scripts"
venv="$(cd "$venv" && pwd)"
(cd "$work" && VALUECARD_API_TEST_DATA="$work/data" PYTHONPATH="$scripts" SCHEMATHESIS_HOOKS=api_property_hooks \
timeout --signal=INT "$seconds" "$venv/bin/schemathesis" run "$url/openapi.json" \
  --generation-database none \
  --tls-verify "$work/data/center/service-certificate.pem" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" \
  --seed "$seed" \
  --request-timeout 15 \
  --no-color) \
  || status=$?

if grep -q 'status=5[0-9][0-9]' "$work/serve.log"; then
  echo "the service answered 5xx:" >&2
  grep 'status=5[0-9][0-9]' "$work/serve.log" >&2
  status=1
fi
if [ "$status" -ne 0 ]; then
  echo "API property test failed (schemathesis exit $status, seed $seed)" >&2
  exit "$status"
fi
echo "API property test passed"
