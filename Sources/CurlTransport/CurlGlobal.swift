import CCurl

/// The result of the process's one `curl_global_init`; a global `let` is initialised once, thread-safely,
/// on first use, which is exactly the guarantee libcurl asks for.
private let globalInitResult: UInt32 = curl_global_init(Int(CURL_GLOBAL_ALL)).rawValue

enum CurlGlobal {
    /// Initialises libcurl for the process if no engine has yet.
    static func ensureInitialized() throws {
        let code = globalInitResult
        guard code == CURLE_OK.rawValue else {
            throw TransportError(
                kind: .localConfiguration,
                curlCode: Int32(truncatingIfNeeded: code),
                detail: "curl_global_init failed"
            )
        }
    }
}

/// The libcurl version the process runs with, as `0xXXYYZZ`.
let curlVersionNumber: UInt32 = UInt32(curl_version_info(CURLVERSION_FIRST).pointee.version_num)

/// libcurl before 8.0.0 breaks h2c prior-knowledge connections on reuse: the second transfer fails with
/// "Error in the HTTP2 framing layer" (curl issue #10634, fixed by pull request #10643). Debian 12 ships 7.88.1.
var curlReusesPriorKnowledgeConnections: Bool { curlVersionNumber >= 0x08_00_00 }
