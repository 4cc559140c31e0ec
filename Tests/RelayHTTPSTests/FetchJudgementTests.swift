// What HTTPSFetcher makes of a response's head and what request it sends,
// without a socket.
import Testing
@testable import RelayHTTPS

struct HeadCase: Sendable, CustomTestStringConvertible {
    let status: Int
    let headers: [(String, String)]
    let failure: HTTPSFetchFailure?
    var testDescription: String { "\(status) \(headers.map { "\($0.0): \($0.1)" }) → \(failure.map { "\($0)" } ?? "policy")" }
}

@Suite("What a response's head means for the fetch")
struct FetchJudgementTests {
    static let cases: [HeadCase] = [
        HeadCase(status: 200, headers: [("Content-Type", "text/plain")], failure: nil),
        HeadCase(status: 200, headers: [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")], failure: nil),
        HeadCase(status: 200, headers: [("Content-Type", "text/html")], failure: .mediaType("text/html")),
        HeadCase(status: 200, headers: [], failure: .mediaType("")),
        HeadCase(status: 301, headers: [("Location", "https://x.test/")], failure: .redirect(301, "https://x.test/")),
        HeadCase(status: 302, headers: [], failure: .redirect(302, nil)),
        HeadCase(status: 307, headers: [("Location", "/p")], failure: .redirect(307, "/p")),
        HeadCase(status: 304, headers: [], failure: .redirect(304, nil)),
        HeadCase(status: 204, headers: [("Content-Type", "text/plain")], failure: .status(204)),
        HeadCase(status: 203, headers: [("Content-Type", "text/plain")], failure: .status(203)),
        HeadCase(status: 404, headers: [("Content-Type", "text/plain")], failure: .status(404)),
        HeadCase(status: 500, headers: [], failure: .status(500)),
    ]

    @Test("only 200 text/plain may be a policy", arguments: cases)
    func judge(_ c: HeadCase) {
        #expect(HTTPSFetcher.judge(head: HTTPResponse(status: c.status, headers: c.headers, body: [])) == c.failure)
    }

    @Test("the request names the port only when it is not 443")
    func request() {
        let standard = HTTPSFetcher.request(host: "mta-sts.example.com", path: "/.well-known/mta-sts.txt", port: 443)
        #expect(standard.map { String(decoding: $0, as: UTF8.self) }
                == "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\nUser-Agent: relayd\r\n"
                + "Accept: text/plain\r\nConnection: close\r\n\r\n")
        let other = HTTPSFetcher.request(host: "h.test", path: "/", port: 8443)
        #expect(other.map { String(decoding: $0, as: UTF8.self) }?.contains("\r\nHost: h.test:8443\r\n") == true)
        #expect(HTTPSFetcher.request(host: "h.test", path: "/a b", port: 443) == nil)
        #expect(HTTPSFetcher.request(host: "h.test", path: "*", port: 443) == nil)
    }
}
