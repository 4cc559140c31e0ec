// HTTPSFetcher against an in-process HTTPS server on 127.0.0.1 with the
// test CA's certificate (mx.pem: mx.relayd.test, localhost, 127.0.0.1) and
// a fake resolver that maps the policy host there: what each answer the
// RFC names becomes, that SNI and the name check are real, and that one
// deadline covers the whole fetch.
import Dispatch
import Foundation
import Testing
@testable import RelayModel
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayHTTPS
import RelayTestSupport

private let policyHost = "mx.relayd.test"
private let policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.relayd.test\r\nmax_age: 86400\r\n"

private func fetch(host: String = policyHost, path: String = "/.well-known/mta-sts.txt", port: UInt16,
                   resolver: FakeResolver? = nil, timeout: Int = 10) async throws -> Result<[UInt8], HTTPSFetchFailure> {
    let dns = resolver ?? {
        let r = FakeResolver()
        r.set(host, .a, [.a(IPAddress("127.0.0.1")!)])
        return r
    }()
    let fetcher = HTTPSFetcher(resolver: dns, tlsContext: try makeClientContext(), timeoutSeconds: timeout, port: port)
    return await withCheckedContinuation { continuation in
        fetcher.fetch(host: host, path: path) { continuation.resume(returning: $0) }
    }
}

private func serve(_ behaviour: TestHTTPSServer.Behaviour, cert: String = "mx.pem", key: String = "mx.key") throws -> TestHTTPSServer {
    try TestHTTPSServer(context: try makeServerContext(cert: cert, key: key), behaviour: behaviour)
}

private func ok(_ body: String, contentType: String = "text/plain") -> String {
    "HTTP/1.1 200 OK\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
}

@Suite("HTTPS fetch, in process")
struct HTTPSFetcherTests {
    @Test("200 text/plain: the body, SNI and Host name the policy host, the request is the one we mean")
    func success() async throws {
        let server = try serve(.respond(ok(policy)))
        let result = try await fetch(port: server.port)
        #expect(result == .success(Array(policy.utf8)))
        let seen = try #require(server.finish())
        #expect(seen.serverName == policyHost)
        #expect(seen.request == "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: \(policyHost):\(server.port)\r\n"
                + "User-Agent: relayd\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
    }

    @Test("a charset parameter is not part of the media type")
    func charset() async throws {
        let server = try serve(.respond(ok(policy, contentType: "Text/Plain ; charset=utf-8")))
        #expect(try await fetch(port: server.port) == .success(Array(policy.utf8)))
    }

    @Test("a body of exactly 64 KiB, chunked over many TLS records, is whole")
    func bodyAtCap() async throws {
        let body = String(repeating: "a", count: 64 * 1024)
        var wire = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        for _ in 0..<16 { wire += "1000\r\n" + String(repeating: "a", count: 4096) + "\r\n" }
        wire += "0\r\n\r\n"
        let server = try serve(.respond(wire))
        #expect(try await fetch(port: server.port) == .success(Array(body.utf8)))
    }

    @Test("301 is reported with its Location and never followed")
    func redirect() async throws {
        let server = try serve(.respond("HTTP/1.1 301 Moved Permanently\r\nLocation: https://evil.test/p.txt\r\n"
                                        + "Content-Type: text/plain\r\nContent-Length: \(policy.utf8.count)\r\n\r\n\(policy)"))
        let resolver = FakeResolver()
        resolver.set(policyHost, .a, [.a(IPAddress("127.0.0.1")!)])
        let result = try await fetch(port: server.port, resolver: resolver)
        #expect(result == .failure(.redirect(301, "https://evil.test/p.txt")))
        #expect(server.finish()?.connections == 1)
        #expect(resolver.asked == ["\(policyHost)/a", "\(policyHost)/aaaa"])
    }

    @Test("404 is a status failure")
    func notFound() async throws {
        let server = try serve(.respond("HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 9\r\n\r\nnot found"))
        #expect(try await fetch(port: server.port) == .failure(.status(404)))
    }

    @Test("text/html is refused, whatever the body")
    func html() async throws {
        let server = try serve(.respond(ok(policy, contentType: "text/html; charset=utf-8")))
        #expect(try await fetch(port: server.port) == .failure(.mediaType("text/html; charset=utf-8")))
    }

    @Test("an oversized body fails without being read to its end",
          arguments: ["Content-Length: 33554432\r\n", ""])
    func oversized(_ framing: String) async throws {
        let total = 32 * 1024 * 1024
        let server = try serve(.stream(head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\(framing)\r\n", bodyBytes: total))
        #expect(try await fetch(port: server.port) == .failure(.tooLarge))
        let seen = try #require(server.finish())
        #expect(seen.bodyBytesWritten < total)
    }

    @Test("a body that runs to the close needs close_notify; a bare TCP close may be a truncation")
    func closeFramed() async throws {
        let clean = try serve(.respond("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n\(policy)", cleanClose: true))
        #expect(try await fetch(port: clean.port) == .success(Array(policy.utf8)))
        let bare = try serve(.respond("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n\(policy)", cleanClose: false))
        guard case .failure(.malformed(let why)) = try await fetch(port: bare.port) else {
            Issue.record("a truncatable body was accepted"); return
        }
        #expect(why.contains("close_notify"))
    }

    @Test("a server that never answers: one deadline for the whole fetch",
          arguments: [TestHTTPSServer.Behaviour.silentTCP, .silentAfterHandshake])
    func neverAnswers(_ behaviour: TestHTTPSServer.Behaviour) async throws {
        let server = try serve(behaviour)
        let dns = FakeResolver()
        dns.set(policyHost, .a, [.a(IPAddress("127.0.0.1")!)])
        let fetcher = HTTPSFetcher(resolver: dns, tlsContext: try makeClientContext(), timeoutSeconds: 2, port: server.port)
        let started = DispatchTime.now()
        // The time is taken in the completion, on the fetch's own queue: when
        // the deadline fired, not when a busy test pool got round to resuming.
        let (result, seconds) = await withCheckedContinuation { continuation in
            fetcher.fetch(host: policyHost, path: "/.well-known/mta-sts.txt") { r in
                continuation.resume(returning: (r, Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9))
            }
        }
        #expect(result == .failure(.timeout))
        #expect(seconds >= 1.9 && seconds < 6)
        _ = server.finish()
    }

    @Test("a certificate for other names fails TLS, and no request is sent")
    func wrongName() async throws {
        let server = try serve(.respond(ok(policy)))
        let host = "mta-sts.other.test"
        let result = try await fetch(host: host, port: server.port)
        guard case .failure(.tls(let failure)) = result else { Issue.record("\(result)"); return }
        #expect(failure.kind == .hostnameMismatch)
        let seen = try #require(server.finish())
        #expect(seen.serverName == host)
        #expect(seen.request.isEmpty)
    }

    @Test("a certificate outside the trust store fails TLS")
    func untrusted() async throws {
        let server = try serve(.respond(ok(policy)), cert: "selfsigned.pem", key: "selfsigned.key")
        let result = try await fetch(port: server.port)
        guard case .failure(.tls(let failure)) = result else { Issue.record("\(result)"); return }
        #expect(failure.kind == .certificateUntrusted)
        #expect(server.finish()?.request.isEmpty == true)
    }

    @Test("addresses are tried in order, IPv4 first, each error named")
    func addressOrder() async throws {
        let server = try serve(.respond(ok(policy)))
        let resolver = FakeResolver()
        resolver.set(policyHost, .a, [.a(IPAddress("127.0.0.2")!), .a(IPAddress("127.0.0.1")!)])
        resolver.set(policyHost, .aaaa, [.aaaa(IPAddress("::1")!)])
        #expect(try await fetch(port: server.port, resolver: resolver) == .success(Array(policy.utf8)))
        #expect(server.finish()?.connections == 1)

        let refusing = FakeResolver()
        refusing.set(policyHost, .a, [.a(IPAddress("127.0.0.2")!)])
        refusing.set(policyHost, .aaaa, [.aaaa(IPAddress("::1")!)])
        let port = unusedPort()
        guard case .failure(.connect(let why)) = try await fetch(port: port, resolver: refusing) else {
            Issue.record("connected to an unused port"); return
        }
        let v4 = try #require(why.range(of: "127.0.0.2"))
        let v6 = try #require(why.range(of: "::1"))
        #expect(v4.lowerBound < v6.lowerBound)
    }

    @Test("no address, or a lookup failure, is a DNS failure")
    func dns() async throws {
        let empty = FakeResolver()
        guard case .failure(.dns) = try await fetch(port: 443, resolver: empty) else { Issue.record("no DNS failure"); return }
        let failing = FakeResolver()
        failing.fail(policyHost, .a, .timeout)
        failing.setRcode(policyHost, .aaaa, .servFail)
        guard case .failure(.dns(let why)) = try await fetch(port: 443, resolver: failing) else {
            Issue.record("no DNS failure"); return
        }
        #expect(why.contains("DNS timeout") && why.contains("SERVFAIL"))
    }

    @Test("a host or path that cannot make a request is refused before any lookup",
          arguments: [("mx.relayd.test\r\nX: y", "/p"), ("", "/p"), ("mx.relayd.test", "p"),
                      ("mx.relayd.test", "/p q"), ("mx.relayd.test", "/p\r\nX: y")])
    func invalidRequest(_ host: String, _ path: String) async throws {
        let resolver = FakeResolver()
        guard case .failure(.invalidRequest) = try await fetch(host: host, path: path, port: 443, resolver: resolver) else {
            Issue.record("request accepted"); return
        }
        #expect(resolver.asked.isEmpty)
    }
}

private func post(_ body: [UInt8], port: UInt16, host: String = policyHost, path: String = "/tlsrpt",
                  contentType: String = "application/tlsrpt+gzip") async throws -> Result<Int, HTTPSFetchFailure> {
    let dns = FakeResolver()
    dns.set(host, .a, [.a(IPAddress("127.0.0.1")!)])
    let fetcher = HTTPSFetcher(resolver: dns, tlsContext: try makeClientContext(), timeoutSeconds: 10, port: port)
    return await withCheckedContinuation { continuation in
        fetcher.post(host: host, path: path, contentType: contentType, body: body) { continuation.resume(returning: $0) }
    }
}

@Suite("HTTPS POST (TLS-RPT reports), in process")
struct HTTPSPostTests {
    let report: [UInt8] = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }

    @Test("any 2xx is delivered; the server gets the request line, the type, the length and every body byte")
    func accepted() async throws {
        for status in ["200 OK", "202 Accepted", "204 No Content"] {
            let server = try serve(.respond("HTTP/1.1 \(status)\r\nContent-Length: 0\r\n\r\n"))
            #expect(try await post(report, port: server.port) == .success(Int(status.prefix(3))!))
            let seen = try #require(server.finish())
            #expect(seen.serverName == policyHost)
            #expect(seen.request == "POST /tlsrpt HTTP/1.1\r\nHost: \(policyHost):\(server.port)\r\nUser-Agent: relayd\r\n"
                    + "Content-Type: application/tlsrpt+gzip\r\nContent-Length: \(report.count)\r\nConnection: close\r\n\r\n")
            #expect(seen.requestBody == report)
        }
    }

    @Test("other statuses fail; a redirect is reported and not followed")
    func refused() async throws {
        let server = try serve(.respond("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"))
        #expect(try await post(report, port: server.port) == .failure(.status(503)))
        let moved = try serve(.respond("HTTP/1.1 307 Temporary Redirect\r\nLocation: https://elsewhere.test/\r\nContent-Length: 0\r\n\r\n"))
        #expect(try await post(report, port: moved.port) == .failure(.redirect(307, "https://elsewhere.test/")))
        #expect(moved.finish()?.connections == 1)
    }

    @Test("the certificate must verify for the host: no body leaves otherwise")
    func wrongName() async throws {
        let server = try serve(.respond("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
        let result = try await post(report, port: server.port, host: "reports.other.test")
        guard case .failure(.tls(let f)) = result else { Issue.record("\(result)"); return }
        #expect(f.kind == .hostnameMismatch)
        #expect(server.finish()?.request == "")
    }

    @Test("a path or media type that could end a line is refused before any lookup",
          arguments: [("/a b", "application/tlsrpt+gzip"), ("x", "application/tlsrpt+gzip"), ("/ok", "a\r\nX-Evil: 1"), ("/ok", "")])
    func invalid(_ path: String, _ type: String) async throws {
        let result = try await post(report, port: 1, path: path, contentType: type)
        guard case .failure(.invalidRequest) = result else { Issue.record("\(result)"); return }
    }
}
