#!/usr/bin/env bash
# Instructions per call setup and per 20 ms media tick per stream, from
# valgrind's callgrind: deterministic beside the wall-clock figures of
# `callout bench calls`, so a regression shows on a noisy machine.
#
# Each figure is a difference of two runs that differ in one thing only,
# so start-up, the other phases and sipp's UAC phase cancel out:
# - setup: --setup-calls A then B (same everything else):
#   (Ir(B) - Ir(A)) / (B - A);
# - media: --hold H1 then H2 with C streaming calls:
#   (Ir(H2) - Ir(H1)) / (C * (H2 - H1) / 20 ms).
# Only callout's own process is counted (the sipp UAS is not traced).
#
# The peer: sipp's own UAC (`-sn uac`: INVITE, 100/180/200, ACK, BYE)
# against the same UAS scenario (tests/sipp/bench_uas.xml), traced the
# same way (-m A then -m B), so the ratio callout / sipp is instructions
# for the same SIP exchange in the same run. Needs valgrind and sipp.
# Usage: benches/callgrind_calls.sh [A B C H1 H2]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CALLOUT_BIN:-./target/release/callout}
[ -x "$bin" ] || cargo build --release --quiet
a=${1:-200} b=${2:-1200} c=${3:-20} h1=${4:-1} h2=${5:-3}
work=$(mktemp -d)
# Leave out the sipp streaming phase where the binary has one: it is not
# the call path measured here.
peer=()
"$bin" bench calls --help 2>/dev/null | grep -q -- --no-peer-media && peer=(--no-peer-media)
trap 'kill "${uas:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
ir() { # total instructions of one callgrind run: $1 = name, rest = args
  local name=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" \
    "$bin" bench calls --window 20 "${peer[@]}" "$@" >"$work/$name.log" 2>&1 || {
    echo "run $name failed:"; tail -5 "$work/$name.log"; exit 1; }
  grep -m1 '^summary:' "$work/$name.out" | awk '{print $2}'
}
free_port() {
  python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
sipp_ir() { # sipp's UAC under callgrind: $1 = name, $2 = calls
  local name=$1 n=$2 port
  port=$(free_port)
  # The UAS's SDP names a port nobody reads: sipp's UAC sends no RTP.
  sed "s/RTP_SINK_PORT/$(free_port)/" tests/sipp/bench_uas.xml >"$work/uas.xml"
  sipp -sf "$work/uas.xml" -i 127.0.0.1 -p "$port" -nostdin \
    -max_socket 4096 -buff_size 8388608 >"$work/uas-$name.log" 2>&1 </dev/null &
  uas=$!
  sleep 0.5
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" \
    sipp -sn uac "127.0.0.1:$port" -i 127.0.0.1 -p "$(free_port)" \
    -m "$n" -l 20 -r 100000 -rp 1000 -timeout 300s \
    -max_socket 4096 -buff_size 8388608 -nostdin \
    >"$work/$name.log" 2>&1 </dev/null || {
    echo "sipp run $name failed:"; tail -5 "$work/$name.log"; exit 1; }
  kill "$uas" 2>/dev/null || true
  wait "$uas" 2>/dev/null || true
  grep -m1 '^summary:' "$work/$name.out" | awk '{print $2}'
}
s1=$(ir setup-a --setup-calls "$a" --concurrent 1 --hold 1s)
s2=$(ir setup-b --setup-calls "$b" --concurrent 1 --hold 1s)
p1=$(sipp_ir sipp-a "$a")
p2=$(sipp_ir sipp-b "$b")
m1=$(ir media-a --setup-calls 10 --concurrent "$c" --hold "${h1}s")
m2=$(ir media-b --setup-calls 10 --concurrent "$c" --hold "${h2}s")
grep -h '^setup:' "$work"/setup-*.log
if [ -n "${CALLGRIND_KEEP:-}" ]; then
  mkdir -p "$CALLGRIND_KEEP" && cp "$work"/*.out "$CALLGRIND_KEEP"/
fi
python3 - "$s1" "$s2" "$a" "$b" "$m1" "$m2" "$c" "$h1" "$h2" "$p1" "$p2" <<'EOF'
import sys
s1, s2, a, b, m1, m2, c, h1, h2, p1, p2 = map(float, sys.argv[1:])
ours = (s2 - s1) / (b - a)
peer = (p2 - p1) / (b - a)
print(f"callgrind: {ours:,.0f} instructions per call setup "
      f"({b - a:.0f} calls between the runs)")
print(f"callgrind: sipp uac {peer:,.0f} instructions per call setup "
      f"(same uas scenario, {b - a:.0f} calls between the runs)")
print(f"ratio: callout / sipp instructions per call setup = {ours / peer:.2f}")
ticks = c * (h2 - h1) * 1000 / 20
print(f"callgrind: {(m2 - m1) / ticks:,.0f} instructions per 20 ms media tick per stream "
      f"({c:.0f} streams, {h2 - h1:.0f} s between the runs)")
EOF
