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
# Only callout's own process is counted (sipp is not traced). Needs
# valgrind and sipp. Usage: benches/callgrind_calls.sh [A B C H1 H2]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CALLOUT_BIN:-./target/release/callout}
[ -x "$bin" ] || cargo build --release --quiet
a=${1:-200} b=${2:-1200} c=${3:-20} h1=${4:-1} h2=${5:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ir() { # total instructions of one callgrind run: $1 = name, rest = args
  local name=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.out" \
    "$bin" bench calls --window 20 "$@" >"$work/$name.log" 2>&1 || {
    echo "run $name failed:"; tail -5 "$work/$name.log"; exit 1; }
  grep -m1 '^summary:' "$work/$name.out" | awk '{print $2}'
}
s1=$(ir setup-a --setup-calls "$a" --concurrent 1 --hold 1s)
s2=$(ir setup-b --setup-calls "$b" --concurrent 1 --hold 1s)
m1=$(ir media-a --setup-calls 10 --concurrent "$c" --hold "${h1}s")
m2=$(ir media-b --setup-calls 10 --concurrent "$c" --hold "${h2}s")
grep -h '^setup:' "$work"/setup-*.log
python3 - "$s1" "$s2" "$a" "$b" "$m1" "$m2" "$c" "$h1" "$h2" <<'EOF'
import sys
s1, s2, a, b, m1, m2, c, h1, h2 = map(float, sys.argv[1:])
print(f"callgrind: {(s2 - s1) / (b - a):,.0f} instructions per call setup "
      f"({b - a:.0f} calls between the runs)")
ticks = c * (h2 - h1) * 1000 / 20
print(f"callgrind: {(m2 - m1) / ticks:,.0f} instructions per 20 ms media tick per stream "
      f"({c:.0f} streams, {h2 - h1:.0f} s between the runs)")
EOF
