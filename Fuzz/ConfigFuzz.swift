// libFuzzer target: the config and policy loaders (YAML through Yams into checked settings) on arbitrary text.
// Built by scripts/fuzz.sh: Config and its dependencies compiled by SwiftPM with the fuzzer's coverage
// instrumentation, this harness linked against their objects. A bad file must come back as a ConfigError
// (file:line:column issues); a crash, a trap or a hang is a bug.

import Config

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data + 1, count: size - 1), as: UTF8.self)
    if data[0] & 1 == 0 {
        _ = try? ConfigLoader.parse(text)
    } else {
        _ = try? PolicyLoader.parse(text)
    }
    return 0
}
