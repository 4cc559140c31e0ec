import Testing
@testable import RelayMetrics

@Suite struct ScrapeRequestParserTests {
    func verdict(_ text: String, max: Int = ScrapeRequestParser.defaultMaxHeadBytes) -> ScrapeRequestParser.Verdict {
        var p = ScrapeRequestParser(maxHeadBytes: max)
        return p.receive(Array(text.utf8))
    }

    @Test func acceptsAPrometheusScrape() {
        #expect(verdict("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nUser-Agent: Prometheus/2.48\r\nAccept: text/plain\r\n\r\n") == .metrics)
        #expect(verdict("GET /metrics HTTP/1.0\r\n\r\n") == .metrics)
        #expect(verdict("GET /metrics?name[]=x HTTP/1.1\r\nHost: a\r\n\r\n") == .metrics)
        #expect(verdict("GET /metrics HTTP/1.1\nHost: a\n\n") == .metrics)
    }

    @Test func byteAtATimeGivesTheSameVerdictAndOnlyAtTheEnd() {
        let text = Array("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        var p = ScrapeRequestParser()
        for b in text.dropLast() { #expect(p.receive([b]) == .needMore) }
        #expect(p.receive([text.last!]) == .metrics)
        // Bytes after the verdict change nothing.
        #expect(p.receive(Array("POST / HTTP/1.1\r\n\r\n".utf8)) == .metrics)
    }

    @Test func otherPathsAre404AndOtherMethods405() {
        #expect(verdict("GET / HTTP/1.1\r\nHost: a\r\n\r\n") == .reject(.notFound))
        #expect(verdict("GET /metricsx HTTP/1.1\r\nHost: a\r\n\r\n") == .reject(.notFound))
        #expect(verdict("GET /metrics/ HTTP/1.1\r\nHost: a\r\n\r\n") == .reject(.notFound))
        #expect(verdict("POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n") == .reject(.methodNotAllowed))
        #expect(verdict("HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n") == .reject(.methodNotAllowed))
        #expect(verdict("DELETE /metrics HTTP/1.0\r\n\r\n") == .reject(.methodNotAllowed))
    }

    @Test func malformedHeadsAre400() {
        let bad = [
            "\r\n\r\n",
            "\n",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /metrics HTTP/1.1 extra\r\nHost: a\r\n\r\n",
            "GET metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GE\u{7F}T /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n\r\n",                       // no Host
            "GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",  // two
            "GET /metrics HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  // obs-fold
            "GET /metrics HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            "GET /métrics HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /metrics HTTP/1.12\r\nHost: a\r\n\r\n",
            "GET /metrics FTP/1.1\r\nHost: a\r\n\r\n",
            "\u{16}\u{3}\u{1}\u{0}\u{a5}\u{1}\n\n",                  // a TLS ClientHello's start
        ]
        for text in bad {
            #expect(verdict(text) == .reject(.badRequest), "\(Array(text.utf8))")
        }
    }

    @Test func otherVersionsAre505() {
        #expect(verdict("GET /metrics HTTP/2.0\r\nHost: a\r\n\r\n") == .reject(.versionNotSupported))
        #expect(verdict("GET /metrics HTTP/0.9\r\n\r\n") == .reject(.versionNotSupported))
    }

    @Test func theHeadIsBoundedBeforeItEnds() {
        // An endless request line: refused as soon as the cap is reached.
        var p = ScrapeRequestParser(maxHeadBytes: 64)
        var verdicts: [ScrapeRequestParser.Verdict] = []
        for _ in 0..<10 { verdicts.append(p.receive(Array(repeating: UInt8(ascii: "A"), count: 10))) }
        #expect(verdicts.prefix(6).allSatisfy { $0 == .needMore })
        #expect(verdicts[6] == .reject(.badRequest))
        // Endless fields after a good request line.
        var q = ScrapeRequestParser(maxHeadBytes: 256)
        #expect(q.receive(Array("GET /metrics HTTP/1.1\r\nHost: a\r\n".utf8)) == .needMore)
        var last = ScrapeRequestParser.Verdict.needMore
        for i in 0..<100 where last == .needMore { last = q.receive(Array("X-\(i): y\r\n".utf8)) }
        #expect(last == .reject(.headTooLarge))
        // Too many short fields within the byte cap.
        let many = (0..<(ScrapeRequestParser.maxFields + 1)).map { "A\($0): b\r\n" }.joined()
        #expect(verdict("GET /metrics HTTP/1.1\r\nHost: a\r\n" + many + "\r\n") == .reject(.headTooLarge))
    }

    @Test func responsesAreFramedAndClose() {
        let ok = String(decoding: ScrapeRequestParser.response(.metrics) { Array("a 1\n".utf8) }, as: UTF8.self)
        #expect(ok == "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\na 1\n")
        let notAllowed = String(decoding: ScrapeRequestParser.response(.reject(.methodNotAllowed)) { [] }, as: UTF8.self)
        #expect(notAllowed.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        #expect(notAllowed.contains("\r\nAllow: GET\r\n"))
        #expect(notAllowed.hasSuffix("\r\n\r\nMethod Not Allowed\n"))
        let notFound = String(decoding: ScrapeRequestParser.response(.reject(.notFound)) { [] }, as: UTF8.self)
        #expect(notFound.hasPrefix("HTTP/1.1 404 Not Found\r\n") && !notFound.contains("Allow:"))
        #expect(ScrapeRequestParser.response(.needMore) { [1] }.isEmpty)
    }
}
