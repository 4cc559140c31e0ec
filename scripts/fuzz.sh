#!/bin/sh
# Builds the ServerSession fuzz target with libFuzzer and runs it for
# $1 seconds (default 60) over fuzz/corpus. Crashes land in .build-fuzz/.
set -eu
cd "$(dirname "$0")/.."
seconds="${1:-60}"
out=.build-fuzz
mkdir -p "$out/corpus"
cp fuzz/corpus/* "$out/corpus/" 2>/dev/null || true
swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name RelayFuzz \
  Sources/RelayCore/SMTP/*.swift Sources/RelayCore/Model/*.swift fuzz/FuzzServerSession.swift \
  -o "$out/fuzz-server-session"
"$out/fuzz-server-session" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
  -artifact_prefix="$out/" -print_final_stats=1 "$out/corpus"
