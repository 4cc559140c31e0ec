// The client side of a TLS probe (what `relayd probe` and a re-probe of a
// learned domain run against one address): greeting, EHLO, STARTTLS when
// offered, the handshake, EHLO again, QUIT. It never sends MAIL, so a
// probe cannot deliver or even begin a transaction. Sans-IO like
// ClientSession: replies in, actions out; the driver connects, runs the
// handshake and reports back.
//
// Everything the server says is untrusted: replies go through ReplyParser
// (line and reply caps, strict shape), a malformed reply ends the probe at
// the step it arrived in, and bytes after the 220 to STARTTLS are counted
// and thrown away, never read as SMTP (RFC 3207 §6; the injection attack).
// Every way a probe can end short is a ProbeFailure naming its step.
import RelayModel

/// Where in the probe dialogue something happened. `connect` is the
/// driver's step (no machine runs before the socket is up).
public enum ProbeStep: String, Equatable, Sendable, CaseIterable {
    case connect, greeting, ehlo, starttls, handshake
    case ehloAfterTLS = "ehlo-after-tls"
}

public struct ProbeFailure: Equatable, Sendable, CustomStringConvertible {
    public let step: ProbeStep
    public let detail: String
    /// Set when the handshake failed: the reason in the delivery log's terms.
    public let tls: TLSFailure?

    public init(step: ProbeStep, detail: String, tls: TLSFailure? = nil) {
        self.step = step
        self.detail = detail
        self.tls = tls
    }

    public var description: String { "\(step.rawValue): \(detail)" }
}

/// What the dialogue showed, whether or not it reached its end.
public struct ProbeFindings: Equatable, Sendable {
    /// The greeting's text (the 220 line without its code).
    public var banner: String?
    /// EHLO keywords before TLS, upper-cased, in the server's order.
    public var ehloKeywords: [String] = []
    /// nil until EHLO is answered; a refused EHLO offers nothing.
    public var starttlsOffered: Bool?
    /// The handshake completed.
    public var tlsEstablished = false
    /// EHLO keywords inside TLS (nil until answered there).
    public var ehloKeywordsAfterTLS: [String]?
    /// Plaintext that followed the 220 to STARTTLS and was discarded.
    public var discardedAfterSTARTTLS = 0
    public var failure: ProbeFailure?

    public init() {}
}

public enum ProbeAction: Equatable, Sendable {
    case send([UInt8])
    /// Run the client handshake; report `tlsEstablished` or `tlsFailed`.
    case startTLS
    case close
    case finished(ProbeFindings)
}

public struct ProbeSession: Sendable {
    public let heloName: String
    public private(set) var step = ProbeStep.greeting
    public private(set) var findings = ProbeFindings()
    private var parser = ReplyParser()
    private var done = false

    public init(heloName: String) {
        self.heloName = heloName
    }

    public var isFinished: Bool { done }

    public mutating func receive(_ bytes: [UInt8]) -> [ProbeAction] {
        guard !done, step != .handshake else { return [] }
        parser.append(bytes)
        var actions: [ProbeAction] = []
        while !done {
            let reply: Reply?
            do { reply = try parser.next() } catch {
                return actions + fail("malformed reply (\(error))", quit: false)
            }
            guard let reply else { break }
            actions += handle(reply)
            if step == .handshake {
                findings.discardedAfterSTARTTLS = parser.bufferedByteCount
                parser = ReplyParser()
                break
            }
        }
        return actions
    }

    public mutating func tlsEstablished() -> [ProbeAction] {
        guard !done, step == .handshake else { return [] }
        findings.tlsEstablished = true
        step = .ehloAfterTLS
        return [ehlo()]
    }

    public mutating func tlsFailed(_ failure: TLSFailure) -> [ProbeAction] {
        guard !done, step == .handshake else { return [] }
        return end(ProbeFailure(step: .handshake, detail: failure.description, tls: failure), quit: false)
    }

    public mutating func connectionClosed() -> [ProbeAction] {
        guard !done else { return [] }
        if step == .handshake {
            let f = TLSFailure(kind: .peerClosed, detail: "connection closed during the TLS handshake")
            return [.finished(record(ProbeFailure(step: .handshake, detail: f.description, tls: f)))]
        }
        return [.finished(record(ProbeFailure(step: step, detail: "connection closed by the server")))]
    }

    public mutating func timedOut(after seconds: Int) -> [ProbeAction] {
        guard !done else { return [] }
        return end(ProbeFailure(step: step, detail: "no answer within \(seconds) s"), quit: false)
    }

    // MARK: replies

    private mutating func handle(_ reply: Reply) -> [ProbeAction] {
        switch step {
        case .greeting:
            guard reply.code == 220 else { return fail("greeted with \(reply)", quit: true) }
            findings.banner = reply.lines.joined(separator: " / ")
            step = .ehlo
            return [ehlo()]
        case .ehlo:
            guard reply.code == 250 else {
                findings.starttlsOffered = false
                return fail("EHLO refused: \(reply)", quit: true)
            }
            findings.ehloKeywords = Self.keywords(reply)
            let offered = findings.ehloKeywords.contains("STARTTLS")
            findings.starttlsOffered = offered
            guard offered else { return quit() }
            step = .starttls
            return [send("STARTTLS")]
        case .starttls:
            guard reply.code == 220 else { return fail("STARTTLS refused: \(reply)", quit: true) }
            step = .handshake
            return [.startTLS]
        case .ehloAfterTLS:
            guard reply.code == 250 else { return fail("EHLO refused inside TLS: \(reply)", quit: true) }
            findings.ehloKeywordsAfterTLS = Self.keywords(reply)
            return quit()
        case .connect, .handshake:
            return []
        }
    }

    /// The keyword of each line after the first (RFC 5321 §4.1.1.1).
    static func keywords(_ reply: Reply) -> [String] {
        reply.lines.dropFirst().compactMap { line in
            line.split(separator: " ", maxSplits: 1).first.map { $0.uppercased() }
        }
    }

    // MARK: endings

    private func ehlo() -> ProbeAction { send("EHLO \(heloName)") }

    private func send(_ line: String) -> ProbeAction { .send(Array((line + "\r\n").utf8)) }

    private mutating func quit() -> [ProbeAction] {
        done = true
        return [send("QUIT"), .close, .finished(findings)]
    }

    private mutating func fail(_ detail: String, quit: Bool) -> [ProbeAction] {
        end(ProbeFailure(step: step, detail: detail), quit: quit)
    }

    /// `quit`: the dialogue is still in step, so the server gets a QUIT;
    /// after garbage or a lost handshake there is nothing to say it to.
    private mutating func end(_ failure: ProbeFailure, quit: Bool) -> [ProbeAction] {
        let f = record(failure)
        return (quit ? [send("QUIT")] : []) + [.close, .finished(f)]
    }

    private mutating func record(_ failure: ProbeFailure) -> ProbeFindings {
        done = true
        findings.failure = failure
        return findings
    }
}
