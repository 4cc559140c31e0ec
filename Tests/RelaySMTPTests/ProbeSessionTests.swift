import Testing
@testable import RelayModel
@testable import RelaySMTP

/// Drives a ProbeSession the way the probe driver does, keeping what it sent.
struct ProbeHarness {
    var session = ProbeSession(heloName: "relay.test")
    var commands: [String] = []
    var tlsRequested = 0
    var closed = false
    var findings: ProbeFindings?

    mutating func server(_ text: String, byteAtATime: Bool = false) {
        server(Array(text.utf8), byteAtATime: byteAtATime)
    }

    mutating func server(_ bytes: [UInt8], byteAtATime: Bool = false) {
        if byteAtATime {
            for b in bytes { apply(session.receive([b])) }
        } else {
            apply(session.receive(bytes))
        }
    }

    mutating func apply(_ actions: [ProbeAction]) {
        for a in actions {
            switch a {
            case .send(let bytes):
                commands.append(String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\r\n", with: ""))
            case .startTLS: tlsRequested += 1
            case .close: closed = true
            case .finished(let f):
                #expect(findings == nil, "finished twice")
                findings = f
            }
        }
    }
}

/// A hostile or broken server dialogue and the step the probe must blame.
struct HostileProbe: CustomTestStringConvertible, Sendable {
    let label: String
    let replies: [String]
    let step: ProbeStep
    let detail: String
    var testDescription: String { label }
}

@Suite struct ProbeSessionTests {
    let ehloTLS = "250-mx.far.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n"
    let ehloPlain = "250-mx.far.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"

    @Test("the whole probe: EHLO, STARTTLS, handshake, EHLO, QUIT — never MAIL", arguments: [false, true])
    func wholeProbe(byteAtATime: Bool) {
        var h = ProbeHarness()
        h.server("220 mx.far.example ESMTP ready\r\n", byteAtATime: byteAtATime)
        #expect(h.commands == ["EHLO relay.test"])
        h.server(ehloTLS, byteAtATime: byteAtATime)
        #expect(h.commands.last == "STARTTLS")
        h.server("220 2.0.0 go ahead\r\n", byteAtATime: byteAtATime)
        #expect(h.tlsRequested == 1)
        #expect(h.session.step == .handshake)
        h.apply(h.session.tlsEstablished())
        #expect(h.commands.last == "EHLO relay.test")
        h.server("250-mx.far.example\r\n250-SIZE 1000\r\n250 AUTH PLAIN\r\n", byteAtATime: byteAtATime)
        #expect(h.commands == ["EHLO relay.test", "STARTTLS", "EHLO relay.test", "QUIT"])
        #expect(h.closed)
        let f = try! #require(h.findings)
        #expect(f.failure == nil)
        #expect(f.banner == "mx.far.example ESMTP ready")
        #expect(f.ehloKeywords == ["PIPELINING", "SIZE", "STARTTLS"])
        #expect(f.starttlsOffered == true)
        #expect(f.tlsEstablished)
        #expect(f.ehloKeywordsAfterTLS == ["SIZE", "AUTH"])
        #expect(f.discardedAfterSTARTTLS == 0)
        #expect(!h.commands.contains { $0.hasPrefix("MAIL") })
    }

    @Test("no STARTTLS: EHLO, then QUIT, no failure")
    func noSTARTTLS() {
        var h = ProbeHarness()
        h.server("220 hi\r\n" + ehloPlain)
        #expect(h.commands == ["EHLO relay.test", "QUIT"])
        let f = try! #require(h.findings)
        #expect(f.starttlsOffered == false)
        #expect(f.failure == nil)
        #expect(!f.tlsEstablished)
    }

    @Test("STARTTLS only as a parameter is not an offer")
    func starttlsAsParameter() {
        var h = ProbeHarness()
        h.server("220 hi\r\n250-mx\r\n250 X-NOTE STARTTLS\r\n")
        #expect(h.findings?.starttlsOffered == false)
    }

    static let hostile: [HostileProbe] = [
        HostileProbe(label: "5xx greeting", replies: ["554 5.7.1 go away\r\n"], step: .greeting, detail: "greeted with 554"),
        HostileProbe(label: "421 greeting", replies: ["421 4.3.2 busy\r\n"], step: .greeting, detail: "greeted with 421"),
        HostileProbe(label: "garbage greeting", replies: ["HTTP/1.1 400 Bad Request\r\n"], step: .greeting, detail: "malformed reply"),
        HostileProbe(label: "overlong greeting line", replies: ["220 " + String(repeating: "x", count: 5000) + "\r\n"],
                     step: .greeting, detail: "lineTooLong"),
        HostileProbe(label: "endless line without CRLF", replies: ["220 " + String(repeating: "y", count: 5000)],
                     step: .greeting, detail: "lineTooLong"),
        HostileProbe(label: "code changes inside a multi-line EHLO reply",
                     replies: ["220 hi\r\n", "250-mx\r\n251 STARTTLS\r\n"], step: .ehlo, detail: "code changed"),
        HostileProbe(label: "EHLO refused", replies: ["220 hi\r\n", "502 5.5.1 no\r\n"], step: .ehlo, detail: "EHLO refused"),
        HostileProbe(label: "too many EHLO lines",
                     replies: ["220 hi\r\n", String(repeating: "250-X\r\n", count: 300)], step: .ehlo, detail: "tooManyLines"),
        HostileProbe(label: "control characters in a reply", replies: ["220 hi\r\n", "250 mx\u{1}\r\n"], step: .ehlo,
                     detail: "control character"),
        HostileProbe(label: "STARTTLS refused with 454",
                     replies: ["220 hi\r\n", "250-mx\r\n250 STARTTLS\r\n", "454 4.7.0 TLS not available\r\n"],
                     step: .starttls, detail: "STARTTLS refused: 454 4.7.0"),
        HostileProbe(label: "garbage to STARTTLS",
                     replies: ["220 hi\r\n", "250-mx\r\n250 STARTTLS\r\n", "\u{16}\u{3}\u{1} hello\r\n"],
                     step: .starttls, detail: "malformed reply"),
    ]

    @Test("hostile servers end the probe at the step they broke", arguments: hostile)
    func hostileServer(_ c: HostileProbe) {
        for byteAtATime in [false, true] {
            var h = ProbeHarness()
            for r in c.replies { h.server(r, byteAtATime: byteAtATime) }
            let f = try! #require(h.findings, "\(c.label)")
            let failure = try! #require(f.failure)
            #expect(failure.step == c.step, "\(c.label)")
            #expect(failure.detail.contains(c.detail), "\(c.label): \(failure.detail)")
            #expect(h.closed)
            #expect(h.tlsRequested == 0)
            #expect(!h.commands.contains { $0.hasPrefix("MAIL") || $0.hasPrefix("RCPT") || $0.hasPrefix("DATA") })
        }
    }

    @Test("bytes after the 220 to STARTTLS are counted and never read as SMTP")
    func injectionAfterSTARTTLS() {
        var h = ProbeHarness()
        h.server("220 hi\r\n" + ehloTLS)
        // One read: the 220, then a forged EHLO reply that would hide AUTH.
        let injected = "250-evil\r\n250 AUTH PLAIN\r\n"
        h.server("220 2.0.0 go\r\n" + injected)
        #expect(h.tlsRequested == 1)
        h.server("250 more plaintext while the handshake runs\r\n")
        h.apply(h.session.tlsEstablished())
        h.server("250-mx.far.example\r\n250 SIZE 10\r\n")
        let f = try! #require(h.findings)
        #expect(f.discardedAfterSTARTTLS == injected.utf8.count)
        #expect(f.ehloKeywordsAfterTLS == ["SIZE"])
        #expect(f.failure == nil)
    }

    @Test("a failed handshake is the handshake step, with the TLS reason")
    func handshakeFailed() {
        var h = ProbeHarness()
        h.server("220 hi\r\n" + ehloTLS + "220 go\r\n")
        let tls = TLSFailure(kind: .protocolBelowFloor, detail: "tlsv1 alert protocol version")
        h.apply(h.session.tlsFailed(tls))
        let failure = try! #require(h.findings?.failure)
        #expect(failure.step == .handshake)
        #expect(failure.tls == tls)
        #expect(failure.detail.contains("protocol-below-floor"))
        #expect(h.commands.last == "STARTTLS", "no QUIT in plaintext after a failed handshake")
    }

    @Test("the connection closing mid-handshake is a TLS failure")
    func closedDuringHandshake() {
        var h = ProbeHarness()
        h.server("220 hi\r\n" + ehloTLS + "220 go\r\n")
        h.apply(h.session.connectionClosed())
        #expect(h.findings?.failure?.step == .handshake)
        #expect(h.findings?.failure?.tls?.kind == .peerClosed)
    }

    @Test("closing or falling silent names the step it happened in", arguments: [ProbeStep.greeting, .ehlo, .starttls, .ehloAfterTLS])
    func closedOrSilent(at step: ProbeStep) {
        for timeout in [false, true] {
            var h = ProbeHarness()
            let script: [String]
            switch step {
            case .greeting: script = []
            case .ehlo: script = ["220 hi\r\n"]
            case .starttls: script = ["220 hi\r\n", ehloTLS]
            default: script = ["220 hi\r\n", ehloTLS, "220 go\r\n"]
            }
            for s in script { h.server(s) }
            if step == .ehloAfterTLS { h.apply(h.session.tlsEstablished()) }
            #expect(h.session.step == step)
            h.apply(timeout ? h.session.timedOut(after: 7) : h.session.connectionClosed())
            let failure = try! #require(h.findings?.failure)
            #expect(failure.step == step)
            #expect(failure.detail == (timeout ? "no answer within 7 s" : "connection closed by the server"))
            #expect(h.findings?.tlsEstablished == (step == .ehloAfterTLS))
        }
    }

    @Test("after the end nothing more happens")
    func finishedIsFinal() {
        var h = ProbeHarness()
        h.server("220 hi\r\n" + ehloPlain)
        #expect(h.session.isFinished)
        #expect(h.session.receive(Array("250 more\r\n".utf8)).isEmpty)
        #expect(h.session.connectionClosed().isEmpty)
        #expect(h.session.timedOut(after: 1).isEmpty)
        #expect(h.session.tlsEstablished().isEmpty)
    }
}
