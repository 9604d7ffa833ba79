#!/usr/bin/env bash
# In-band DTMF detector throughput: callout's against spandsp's, same audio,
# same run. Needs sox, espeak-ng, libspandsp-dev and gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
gcc -O2 -o "$work/spandsp_dtmf" benches/spandsp_dtmf.c -lspandsp
# 60 s of test audio: speech, with a 16-key burst every 10 s.
espeak-ng -w "$work/speech.wav" "This is an alert from the monitoring centre. The web server is not responding. Press one to acknowledge, two to pass it on, or nine to hear this message again."
sox "$work/speech.wav" -r 8000 -b 16 -c 1 "$work/speech8k.wav"
parts=()
for k in 697:1209 697:1336 697:1477 770:1209 770:1336 770:1477 852:1209 852:1336 852:1477 941:1336; do
  f="$work/k$k.wav"; sox -n -r 8000 -b 16 -c 1 "$f" synth 0.08 sine "${k%:*}" sine "${k#*:}" vol 0.3 pad 0 0.08
  parts+=("$f")
done
sox "${parts[@]}" "$work/keys.wav"
sox "$work/speech8k.wav" "$work/keys.wav" "$work/block.wav" pad 0 1
sox "$work/block.wav" "$work/audio.wav" repeat 5
sox "$work/audio.wav" -t raw -e signed -b 16 "$work/audio.raw"
repeat=${1:-20}
./target/release/callout bench dtmf "$work/audio.wav" --repeat "$repeat"
"$work/spandsp_dtmf" "$work/audio.raw" "$repeat"
