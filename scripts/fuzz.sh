#!/bin/sh
# Builds the libFuzzer targets and runs each for $1 seconds (default 60):
#   server-session  SMTP commands, DATA and AUTH as a client sends them
#   remote          DNS answers, SMTP replies and the client session
#   sts             MTA-STS policy files, _mta-sts and _smtp._tls TXT records
#   probe-session   replies to relayd probe's dialogue (ProbeSession)
#   learned         learned-status record files (LearnedRecordFormat)
#   records         queue files (QueueFile) and TLS-RPT counter and send-state files
#   message-controls  header sections: Subject tags, encoded-words, the
#                   escalate header, TLS-Required (MessageControls)
# Crashes land in .build-fuzz/<target>-crash-*.
set -eu
cd "$(dirname "$0")/.."
seconds="${1:-60}"
only="${2:-}"
out=.build-fuzz
mkdir -p "$out"
# The fuzzed code is pure (Model, SMTP, the DNS message parser, the
# MTA-STS parsers): it is compiled straight into one module with the fuzz
# entry point, so the imports of its SwiftPM targets (RelayModel,
# RelaySMTP, …) are dropped from copies of the files.
# Per run, so two fuzzers (one per core) can build at once.
src="$out/src.$$"
trap 'rm -rf "$src"' EXIT
rm -rf "$src"
mkdir -p "$src/core" "$src/dns" "$src/sts" "$src/learned" "$src/records"
for f in Sources/RelayCore/SMTP/*.swift Sources/RelayCore/Model/*.swift; do
  sed '/^import Relay/d' "$f" > "$src/core/$(basename "$f")"
done
sed '/^import Relay/d' Sources/RelayCore/DNS/DNSMessage.swift > "$src/dns/DNSMessage.swift"
for f in Sources/RelayCore/STS/*.swift Sources/RelayCore/TLSRPT/TLSRPTRecord.swift; do
  sed '/^import Relay/d' "$f" > "$src/sts/$(basename "$f")"
done
# The learned record's pure files, with the policy vocabulary they use.
for f in Sources/RelayCore/Policy/*.swift Sources/RelayCore/Learned/LearnedRecord.swift \
         Sources/RelayCore/Learned/LearnedRecordFormat.swift Sources/RelayCore/Learned/LearnedClock.swift; do
  sed '/^import Relay/d' "$f" > "$src/learned/$(basename "$f")"
done
# The queue file format and the TLS-RPT record formats, with what they use.
for f in Sources/RelayCore/Queue/QueueFile.swift Sources/RelayCore/Queue/QueueID.swift \
         Sources/RelayCore/TLSRPT/TLSRPTCounts.swift Sources/RelayCore/TLSRPT/TLSRPTSendState.swift \
         Sources/RelayCore/TLSRPT/TLSRPTDay.swift Sources/RelayCore/TLSRPT/TLSRPTEvent.swift; do
  sed '/^import Relay/d' "$f" > "$src/records/$(basename "$f")"
done
core="$src/core/*.swift"
build() {
  # shellcheck disable=SC2086
  swiftc -O -sanitize=fuzzer,address -parse-as-library -package-name relayd -module-name RelayFuzz $core "$@"
}
run() {
  name=$1; corpus=$2; shift 2
  mkdir -p "$out/corpus-$name"
  cp "$corpus"/* "$out/corpus-$name/" 2>/dev/null || true
  "$out/fuzz-$name" -max_total_time="$seconds" -max_len=4096 -timeout=10 \
    -artifact_prefix="$out/$name-" -print_final_stats=1 "$out/corpus-$name"
}
if [ -z "$only" ] || [ "$only" = server-session ]; then
  build fuzz/FuzzServerSession.swift -o "$out/fuzz-server-session"
  run server-session fuzz/corpus
fi
if [ -z "$only" ] || [ "$only" = remote ]; then
  build "$src/dns/DNSMessage.swift" fuzz/FuzzDNSMessage.swift -o "$out/fuzz-remote"
  run remote fuzz/corpus-remote
fi
if [ -z "$only" ] || [ "$only" = sts ]; then
  build "$src"/sts/*.swift fuzz/FuzzSTS.swift -o "$out/fuzz-sts"
  run sts fuzz/corpus-sts
fi
if [ -z "$only" ] || [ "$only" = probe-session ]; then
  build fuzz/FuzzProbeSession.swift -o "$out/fuzz-probe-session"
  run probe-session fuzz/corpus-probe
fi
if [ -z "$only" ] || [ "$only" = learned ]; then
  build "$src"/sts/*.swift "$src"/learned/*.swift fuzz/FuzzLearnedRecord.swift -o "$out/fuzz-learned"
  run learned fuzz/corpus-learned
fi
if [ -z "$only" ] || [ "$only" = message-controls ]; then
  build fuzz/FuzzMessageControls.swift -o "$out/fuzz-message-controls"
  run message-controls fuzz/corpus-message-controls
fi
if [ -z "$only" ] || [ "$only" = records ]; then
  build "$src"/records/*.swift fuzz/FuzzRecords.swift -o "$out/fuzz-records"
  run records fuzz/corpus-records
fi
