#!/usr/bin/env bash
# Starts pcscd with vsmartcard's virtual reader driver vpcd, so that `valuecard card attach`
# can put card images into PC/SC readers ("Virtual PCD 00 00" on TCP port 35963, "Virtual
# PCD 00 01" on 35964) and the PC/SC tests (crates/valuecard/tests/pcsc*.rs,
# with --features valuecard/pcsc) run instead of skipping.
#
# Idempotent: if pcscd already runs, only checks that vpcd listens. On a machine without
# the Debian packages it installs them first when it can (root and apt-get; set
# VALUECARD_NO_INSTALL=1 to forbid that). Without systemd, pcscd runs as
# `pcscd --foreground --info` in a session of its own, logging to $PCSCD_LOG (default
# /tmp/pcscd.log); stop it with `kill "$(cat /run/pcscd/pcscd.pid)"`. Under systemd the
# script starts pcscd.service instead. Debian's /etc/reader.conf.d/vpcd (from
# vsmartcard-vpcd) gives vpcd its port, CHANNELID 0x8C7B = 35963, and two reader slots.
#
# Exit status: 0 when pcscd runs and vpcd listens on 35963, 1 otherwise.
set -euo pipefail

VPCD_PORT=35963
LOG="${PCSCD_LOG:-/tmp/pcscd.log}"
# python3-pyscard serves Debian's /usr/bin/python3 only (the interpreter tests/pyscard_client.py
# names); another Python needs pyscard of its own (docs/operations.md, "Python clients").
PACKAGES=(pcscd vsmartcard-vpcd libpcsclite-dev pkgconf opensc pcsc-tools python3-pyscard)

say() { echo "start-pcscd: $*" >&2; }

have_stack() {
    command -v pcscd >/dev/null 2>&1 &&
        [ -e /etc/reader.conf.d/vpcd ] &&
        command -v opensc-tool >/dev/null 2>&1 &&
        pkg-config --exists libpcsclite 2>/dev/null &&
        /usr/bin/python3 -c 'import smartcard.System' >/dev/null 2>&1
}

# Whether something listens on TCP port $1 (vpcd runs inside pcscd).
listening() {
    local hex
    hex=$(printf ':%04X' "$1")
    if [ -r /proc/net/tcp ]; then
        # Fields: sl, local address, remote address, state (0A = LISTEN).
        awk -v port="$hex" 'NR > 1 && substr($2, length($2) - 4) == port && $4 == "0A" { found = 1 }
            END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
    else
        ss -ltn 2>/dev/null | grep -q ":$1 "
    fi
}

pcscd_running() {
    local pid
    if [ -r /run/pcscd/pcscd.pid ]; then
        # pcscd pads its pid file with NUL bytes.
        pid=$(tr -dc '0-9' </run/pcscd/pcscd.pid 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            return 0
        fi
    fi
    pidof pcscd >/dev/null 2>&1
}

wait_for_vpcd() {
    local tries=0
    until listening "$VPCD_PORT"; do
        tries=$((tries + 1))
        if [ "$tries" -ge 100 ]; then
            return 1
        fi
        sleep 0.1
    done
}

if ! have_stack; then
    if [ "${VALUECARD_NO_INSTALL:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing ${PACKAGES[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    else
        say "pcscd, vsmartcard-vpcd, opensc or libpcsclite-dev missing; install: ${PACKAGES[*]}"
        exit 1
    fi
fi

if pcscd_running; then
    if wait_for_vpcd; then
        say "pcscd already runs; vpcd listens on $VPCD_PORT"
        exit 0
    fi
    # For example a pcscd started before vsmartcard-vpcd was installed: reader.conf.d is
    # read at start only.
    say "pcscd runs without vpcd on port $VPCD_PORT; restart it (kill \"\$(cat /run/pcscd/pcscd.pid)\", then run this again)"
    exit 1
fi

if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    # Under systemd pcscd is socket-activated: start the service through systemd.
    say "starting pcscd.service"
    systemctl start pcscd.service
else
    # A pid file left by a pcscd that died makes a new one refuse to start.
    rm -f /run/pcscd/pcscd.pid
    say "starting pcscd (log: $LOG)"
    setsid nohup pcscd --foreground --info >"$LOG" 2>&1 </dev/null &
fi

if wait_for_vpcd; then
    say "pcscd runs (pid $(tr -dc '0-9' </run/pcscd/pcscd.pid 2>/dev/null || echo '?')); vpcd listens on $VPCD_PORT"
    exit 0
fi
say "pcscd started but vpcd does not listen on $VPCD_PORT; see $LOG (or journalctl -u pcscd)"
tail -n 20 "$LOG" >&2 2>/dev/null || true
exit 1
