#!/usr/bin/env bash
# Segment one case with the served pipeline model (brats_segment) over HTTP: KServe v2 with Triton's binary tensor
# extension, curl and coreutils only (no Python, no tritonclient). The four modality files go as they are; the
# segmentation comes back as .nii.gz with the input's geometry, and the report as JSON.
#
# usage: segment_with_curl.sh URL CASE_PREFIX OUT.nii.gz [REPORT.json] [TTA]
#   URL          the server's HTTP address, as brats-serve prints it (http://127.0.0.1:8000)
#   CASE_PREFIX  the four files are CASE_PREFIX_t1.nii.gz, _t1ce.nii.gz, _t2.nii.gz and _flair.nii.gz
#   TTA          none, flip4 (default, as brats-client) or flip8
# While the server computes, a line every WAIT_EVERY_S seconds (default 10) says how long it has waited.
set -euo pipefail
if [ $# -lt 3 ]; then sed -n '2,10p' "$0" >&2; exit 2; fi
url=$1 prefix=$2 out=$3 report=${4:-} tta=${5:-flip4}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

le32() {  # an unsigned 32-bit little-endian integer: the length before each BYTES element
  printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) $(($1 >> 24 & 255)))"
}

inputs=""
: > "$work/tensors"
for modality in t1 t1ce t2 flair; do
  file="${prefix}_${modality}.nii.gz"
  size=$(stat -c %s "$file")
  inputs+="${inputs:+,}{\"name\":\"$modality\",\"shape\":[1],\"datatype\":\"BYTES\","
  inputs+="\"parameters\":{\"binary_data_size\":$((size + 4))}}"
  { le32 "$size"; cat "$file"; } >> "$work/tensors"
done
outputs='{"name":"segmentation","parameters":{"binary_data":true}},{"name":"report","parameters":{"binary_data":true}}'
header="{\"inputs\":[$inputs],\"outputs\":[$outputs],\"parameters\":{\"tta\":\"$tta\"}}"
{ printf '%s' "$header"; cat "$work/tensors"; } > "$work/request"

# The server segments the case in one request (a BraTS case: 20-60 s on 2 CPU cores): say so, with an estimate from
# brats_segment's own statistics (its mean compute per request since the server started), and the time waited
# every WAIT_EVERY_S seconds.
stats=$(curl -sS --max-time 5 "$url/v2/models/brats_segment/stats" 2>/dev/null) || stats=""
count=$(printf '%s' "$stats" | grep -o '"inference_count":[0-9]*' | head -n 1 | cut -d: -f2) || count=""
infer_ns=$(printf '%s' "$stats" | grep -o '"compute_infer":{"count":[0-9]*,"ns":[0-9]*' | head -n 1 \
  | cut -d: -f4) || infer_ns=""
if [ "${count:-0}" -gt 0 ] && [ -n "$infer_ns" ]; then
  estimate="about $((infer_ns / count / 1000000000)) s, brats_segment's mean over $count request(s) on this server"
else
  estimate="no estimate yet: brats_segment has segmented nothing since the server started; a BraTS case takes 20-60 s"
  estimate+=" on 2 CPU cores"
fi
echo "sent ${prefix}_{t1,t1ce,t2,flair}.nii.gz to $url/v2/models/brats_segment; waiting for the segmentation" \
  "($estimate)" >&2
start=$SECONDS
# (sleep without the script's stdout and stderr: killed with the ticker, it must not hold a caller's pipes open)
( while sleep "${WAIT_EVERY_S:-10}" >/dev/null 2>&1; do echo "  still waiting: $((SECONDS - start)) s" >&2; done ) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true; rm -rf "$work"' EXIT  # || true: set -e would make the exit status 1
status=$(curl -sS -o "$work/response" -D "$work/headers" -w '%{http_code}' --max-time 1800 \
  -H 'Content-Type: application/octet-stream' -H "Inference-Header-Content-Length: ${#header}" \
  --data-binary @"$work/request" "$url/v2/models/brats_segment/infer")
kill "$ticker" 2>/dev/null || true
echo "answered after $((SECONDS - start)) s" >&2
if [ "$status" != 200 ]; then
  echo "brats_segment answered HTTP $status: $(cat "$work/response")" >&2
  exit 1
fi

# The response: a JSON header of Inference-Header-Content-Length bytes, then each output's binary data in the
# header's order, each BYTES element again behind its 32-bit length.
json_length=$(grep -i '^inference-header-content-length:' "$work/headers" | tr -dc '0-9')
head -c "$json_length" "$work/response" > "$work/json"
offset=$((json_length + 1))
for name in $(grep -o '"name":"[a-z]*"' "$work/json" | cut -d'"' -f4); do
  size=$(grep -o "\"name\":\"$name\"[^}]*\"binary_data_size\":[0-9]*" "$work/json" | grep -o '[0-9]*$')
  tail -c +"$((offset + 4))" "$work/response" | head -c "$((size - 4))" > "$work/$name"
  offset=$((offset + size))
done
mv "$work/segmentation" "$out.partial" && mv "$out.partial" "$out"
if [ -n "$report" ]; then mv "$work/report" "$report"; fi
echo "wrote $out"
