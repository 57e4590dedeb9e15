import Foundation

/// `segment` percent-encoded for use as one URL path segment: only RFC 3986 unreserved characters stay as they are,
/// so a model or deployment name from config cannot add segments, a query or a fragment to a provider URL.
func percentEncodedPathSegment(_ segment: String) -> String {
    var allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    allowed.insert(charactersIn: "-._~")
    return segment.addingPercentEncoding(withAllowedCharacters: allowed) ?? segment
}
