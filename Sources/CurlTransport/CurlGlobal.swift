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
                kind: .other,
                curlCode: Int32(truncatingIfNeeded: code),
                detail: "curl_global_init failed"
            )
        }
    }
}
