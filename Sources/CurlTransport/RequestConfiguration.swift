import CCurl

/// Turns an `HTTPRequest` into easy-handle options. Kept apart from the loop so the full list of options a
/// transfer gets is in one place.
enum RequestConfiguration {
    /// Sets every option the transfer needs on a fresh or reset handle. Throws a `.localConfiguration` error
    /// for requests libcurl cannot represent and for any option libcurl refuses; the error names the option or
    /// the header, and never quotes a header value, the body or the URL (values and queries hold API keys).
    static func apply(
        _ request: HTTPRequest,
        to easy: EasyHandle,
        transfer: Transfer,
        context: UnsafeMutableRawPointer
    ) throws {
        let handle = easy.raw
        easy.errorBuffer.pointee = 0
        try check(bw_curl_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, easy.errorBuffer), "ERRORBUFFER")
        try check(bw_curl_easy_setopt_pointer(handle, CURLOPT_PRIVATE, context), "PRIVATE")
        try check(bw_curl_easy_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION, curlWriteCallback), "WRITEFUNCTION")
        try check(bw_curl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, context), "WRITEDATA")
        try check(
            bw_curl_easy_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION, curlHeaderCallback),
            "HEADERFUNCTION"
        )
        try check(bw_curl_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, context), "HEADERDATA")

        // No signals from a library thread, no Nagle delay on small requests, and only the protocols a
        // provider can speak, whatever the URL says.
        try check(bw_curl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1), "NOSIGNAL")
        try check(bw_curl_easy_setopt_long(handle, CURLOPT_TCP_NODELAY, 1), "TCP_NODELAY")
        try check(bw_curl_easy_setopt_string(handle, CURLOPT_PROTOCOLS_STR, "http,https"), "PROTOCOLS_STR")
        // A proxy's "200 Connection established" must not be mistaken for the response head.
        try check(bw_curl_easy_setopt_long(handle, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1), "SUPPRESS_CONNECT_HEADERS")

        // A smaller send buffer than libcurl's 64 KB (the receive buffer: `HTTPRequest.receiveBufferBytes`): over
        // HTTP/2 every transfer holds one for its whole life, open streams included (over HTTP/1.1 a body that
        // fits goes out with the head, without it), and request bodies are a few KB; a larger one takes more writes.
        try check(bw_curl_easy_setopt_long(handle, CURLOPT_UPLOAD_BUFFERSIZE, sendBufferBytes), "UPLOAD_BUFFERSIZE")

        try check(bw_curl_easy_setopt_string(handle, CURLOPT_URL, request.url), "URL")
        try applyVersion(request.httpVersion, handle)
        try applyMethodAndBody(request, handle)
        try applyHeaders(request.headers, handle, transfer)

        if let caFile = request.caFile {
            try check(bw_curl_easy_setopt_string(handle, CURLOPT_CAINFO, caFile), "CAINFO")
        }

        if let connect = request.timeouts.connect {
            try check(
                bw_curl_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, connect.curlMilliseconds),
                "CONNECTTIMEOUT_MS"
            )
        }
        if let total = request.timeouts.total {
            try check(bw_curl_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, total.curlMilliseconds), "TIMEOUT_MS")
        }
    }

    /// libcurl's send buffer per transfer (`CURLOPT_UPLOAD_BUFFERSIZE`; its least is 16 KB).
    static let sendBufferBytes = 16384

    private static func applyVersion(_ version: HTTPVersion, _ handle: UnsafeMutableRawPointer) throws {
        let value: Int
        switch version {
        case .http1_1:
            value = Int(CURL_HTTP_VERSION_1_1)
        case .http2:
            value = Int(CURL_HTTP_VERSION_2TLS)
        case .http2PriorKnowledge:
            value = Int(CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)
        }
        try check(bw_curl_easy_setopt_long(handle, CURLOPT_HTTP_VERSION, value), "HTTP_VERSION")
        if version == .http2PriorKnowledge, !curlReusesPriorKnowledgeConnections {
            // Work around the old libcurl bug (see `curlReusesPriorKnowledgeConnections`): one connection per
            // transfer. Slower, but correct; HTTP/2 over TLS is not affected and keeps its reuse.
            try check(bw_curl_easy_setopt_long(handle, CURLOPT_FRESH_CONNECT, 1), "FRESH_CONNECT")
            try check(bw_curl_easy_setopt_long(handle, CURLOPT_FORBID_REUSE, 1), "FORBID_REUSE")
            return
        }
        if version != .http1_1 {
            // Wait for a connection that is still being set up rather than opening a second one, so
            // concurrent HTTP/2 transfers share one connection.
            try check(bw_curl_easy_setopt_long(handle, CURLOPT_PIPEWAIT, 1), "PIPEWAIT")
        }
    }

    private static func applyMethodAndBody(_ request: HTTPRequest, _ handle: UnsafeMutableRawPointer) throws {
        let method = request.method
        if method == "HEAD" && request.body.isEmpty {
            try check(bw_curl_easy_setopt_long(handle, CURLOPT_NOBODY, 1), "NOBODY")
            return
        }
        let sendsBody = !request.body.isEmpty || method == "POST" || method == "PUT" || method == "PATCH"
        if sendsBody {
            try check(
                bw_curl_easy_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)),
                "POSTFIELDSIZE_LARGE"
            )
            // COPYPOSTFIELDS copies the bytes, so the array need not outlive this call. It must never be
            // given a null pointer: libcurl would then read the body from stdin.
            var empty: UInt8 = 0
            let code: CURLcode
            if request.body.isEmpty {
                code = bw_curl_easy_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, &empty)
            } else {
                code = request.body.withUnsafeBufferPointer { bytes in
                    bw_curl_easy_setopt_pointer(
                        handle,
                        CURLOPT_COPYPOSTFIELDS,
                        UnsafeMutableRawPointer(mutating: bytes.baseAddress)
                    )
                }
            }
            try check(code, "COPYPOSTFIELDS")
        }
        let isDefaultMethod = (method == "GET" && !sendsBody) || (method == "POST" && sendsBody)
        if !isDefaultMethod {
            guard isToken(method) else {
                throw TransportError(kind: .localConfiguration, detail: "the request method is not a valid HTTP token")
            }
            try check(bw_curl_easy_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method), "CUSTOMREQUEST")
        }
    }

    private static func applyHeaders(
        _ headers: [HTTPHeader],
        _ handle: UnsafeMutableRawPointer,
        _ transfer: Transfer
    ) throws {
        // Every header is checked before libcurl sees any of them: a CR, LF or NUL would let a value end its
        // line and smuggle in another header (or end the head), which libcurl would send as given.
        for (index, header) in headers.enumerated() {
            guard isToken(header.name) else {
                // The name is not shown: one that is not a token may be a whole "Name: value" line.
                throw TransportError(
                    kind: .localConfiguration,
                    detail: "request header #\(index + 1) has a name that is not an HTTP token"
                )
            }
            guard isFieldValue(header.value) else {
                throw TransportError(
                    kind: .localConfiguration,
                    detail: "the value of request header \"\(header.name)\" contains a CR, LF or NUL byte"
                )
            }
        }
        // "Expect:" with no value removes libcurl's own `Expect: 100-continue`, which would cost a round
        // trip (or a one-second wait) before every large body.
        guard var list = curl_slist_append(nil, "Expect:") else {
            throw TransportError(kind: .localConfiguration, detail: "out of memory building the header list")
        }
        for header in headers {
            // libcurl sends "Name;" as an empty header, whereas "Name:" would remove it.
            let line = header.value.isEmpty ? header.name + ";" : header.name + ": " + header.value
            guard let appended = curl_slist_append(list, line) else {
                curl_slist_free_all(list)
                throw TransportError(kind: .localConfiguration, detail: "out of memory building the header list")
            }
            list = appended
        }
        transfer.headerList = list
        try check(bw_curl_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, list), "HTTPHEADER")
    }

    /// Whether `text` is an RFC 9110 token (header names, methods): no separators, spaces or controls.
    private static func isToken(_ text: String) -> Bool {
        guard !text.isEmpty else {
            return false
        }
        return text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                return true
            default:
                return "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
        }
    }

    /// Whether `text` can be a header value without smuggling another header line or ending the head.
    private static func isFieldValue(_ text: String) -> Bool {
        !text.utf8.contains { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") || $0 == 0 }
    }

    /// Turns a failed `curl_easy_setopt` into a `.localConfiguration` error naming the option: whatever the
    /// code, libcurl refused something this host asked for, and asking the provider again cannot change that.
    private static func check(_ code: CURLcode, _ option: StaticString) throws {
        guard code == CURLE_OK else {
            throw TransportError(
                kind: .localConfiguration,
                curlCode: Int32(truncatingIfNeeded: code.rawValue),
                detail: "setting CURLOPT_\(option) failed: " + String(cString: curl_easy_strerror(code))
            )
        }
    }
}
