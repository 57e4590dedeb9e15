#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (swiftc -sanitize=fuzzer,address), one target per input surface:
#   wire       the frame decoder, field lists and every message decoder (Sources/BreakwaterWire)
#   providers  the JSON scanner, the chat request, the SSE parser and each provider adapter's response, error and
#              stream translation (Sources/Providers)
#   config     the config and policy loaders (Sources/Config, through Yams)
# wire and providers are compiled straight from their modules' sources (no dependencies beyond Foundation);
# config links against Config and its dependencies (Yams, Governance, Fleet, swift-crypto, hiredis) built by SwiftPM with the
# fuzzer's coverage instrumentation in .build/fuzz-spm. Seeds: the protocol vectors, a few provider answers, the
# example config and policy. Each target runs for SECONDS (default 30). Any crash, trap, leak or timeout fails
# the script; the crashing input is left in .build/fuzz/ (libFuzzer prints its path).
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
out=.build/fuzz
mkdir -p "$out"

build() {  # name, sources...
    local name=$1
    shift
    # The linker warns about every ASan helper symbol; show its output only if the build fails.
    if ! swiftc -sanitize=fuzzer,address -parse-as-library -O -g "$@" -o "$out/$name" > "$out/$name-build.log" 2>&1
    then
        grep -v "Cannot export local symbol" "$out/$name-build.log" | tail -n 30
        echo "building fuzz target $name FAILED"
        exit 1
    fi
}

echo "== fuzz: building targets"
build wire Sources/BreakwaterWire/*.swift Fuzz/WireFuzz.swift
build providers Sources/Providers/*.swift Fuzz/ProvidersFuzz.swift
spm=.build/fuzz-spm
if ! swift build --build-path "$spm" --target Config -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library \
    -Xcc -fsanitize=fuzzer-no-link > "$out/config-spm.log" 2>&1; then
    grep -v "Cannot export local symbol" "$out/config-spm.log" | tail -n 30
    echo "building Config for the config fuzz target FAILED"
    exit 1
fi
config_objects=()
for module in Config Yams CYaml Governance Resilience Fleet PosixThread Crypto CCryptoBoringSSL \
    CCryptoBoringSSLShims CryptoBoringWrapper CXKCP CXKCPShims; do
    if [ -d "$spm/debug/$module.build" ]; then
        while IFS= read -r o; do config_objects+=("$o"); done < <(find "$spm/debug/$module.build" -name "*.o")
    fi
done
module_maps=()
while IFS= read -r m; do module_maps+=(-Xcc "-fmodule-map-file=$m"); done \
    < <(find "$spm/checkouts/Yams/Sources" "$spm/checkouts/swift-crypto/Sources" -path "*/include/module.modulemap")
# Config checks cluster store URLs with Fleet's parser; Fleet imports hiredis (a system library module).
module_maps+=(-Xcc "-fmodule-map-file=Sources/CHiredis/module.modulemap")
build config -I "$spm/debug/Modules" "${module_maps[@]}" Fuzz/ConfigFuzz.swift "${config_objects[@]}" -lhiredis

echo "== fuzz: seed corpora"
rm -rf "$out/seed-wire" "$out/seed-providers" "$out/seed-config"
mkdir -p "$out/seed-wire" "$out/seed-providers" "$out/seed-config" "$out/corpus-wire" "$out/corpus-providers" \
    "$out/corpus-config"
# config: the first byte picks the loader (even: config, odd: policy), the rest is the file.
{ printf '\000'; cat breakwater.example.yaml; } > "$out/seed-config/config"
{ printf '\001'; cat policy.example.yaml; } > "$out/seed-config/policy"
python3 - "$out" <<'PY'
import glob, os, sys
out = sys.argv[1]
for path in sorted(glob.glob("protocol/vectors/*.vector")):
    lines = open(path).read().split("hex:\n", 1)[1].split()
    frame = bytes(int(h, 16) for h in lines)
    name = os.path.basename(path)[:-7]
    for control in (0, 1, 7):  # both limit sets; cut after 3 bytes
        open(f"{out}/seed-wire/{name}-{control}", "wb").write(bytes([control]) + frame)
answers = {
    "chat": b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stream":false,'
            b'"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]}',
    "openai": b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
              b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
              b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}',
    "anthropic": b'{"id":"msg","type":"message","role":"assistant","model":"m","content":[{"type":"text",'
                 b'"text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}',
    "gemini": b'{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":"STOP"}],'
              b'"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,"totalTokenCount":4}}',
    "error": b'{"error":{"message":"no","type":"invalid_request_error","code":"bad"}}',
    "sse-openai": b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":'
                  b'{"content":"h"},"finish_reason":null}]}\n\ndata: [DONE]\n\n',
    "sse-anthropic": b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":'
                     b'{"input_tokens":1}}}\n\nevent: content_block_delta\ndata: {"type":"content_block_delta",'
                     b'"index":0,"delta":{"type":"text_delta","text":"h"}}\n\nevent: message_stop\n'
                     b'data: {"type":"message_stop"}\n\n',
}
for name, body in answers.items():
    for control in range(16):
        open(f"{out}/seed-providers/{name}-{control}", "wb").write(bytes([control]) + body)
PY

status=0
for target in wire providers config; do
    echo "== fuzz: $target for ${seconds}s"
    if ! "$out/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/$target-" "$out/corpus-$target" "$out/seed-$target" > "$out/$target.log" 2>&1; then
        tail -n 40 "$out/$target.log"
        echo "fuzz target $target FAILED (input saved under $out/$target-*)"
        status=1
    else
        # The last status line (executions, coverage, corpus) and the final stats.
        last=$(grep -E "^#[0-9]+" "$out/$target.log" | tail -n 1 || true)
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$target.log")
        echo "$target: $runs executions, 0 crashes; last: $last"
    fi
done
exit $status
