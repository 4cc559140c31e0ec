// HTTPSFetcher: one GET over HTTPS with relayd's own I/O (Connector,
// Connection) and TLS engine (TLSConnection), for the MTA-STS policy fetch
// (RFC 8461 §3.3); and one POST, for TLS-RPT reports (RFC 8460 §5.3),
// with the same DNS, TLS (verified, never a fallback), deadline and
// redirect rules, where any 2xx is success and its body is not read. The rules are the RFC's, held here so no caller can
// loosen them: SNI is sent and the chain and the name `host` must verify
// (a failure is a failure, never a fallback); only a 200 with media type
// text/plain counts; redirects are reported, never followed; the body is
// capped at 64 KiB; one deadline covers DNS, connect, TLS and the response.
// HTTP caching fields are ignored.
//
// Threading: every fetch gets its own serial queue; the resolver's answers
// and the connector's result hop onto it, the connection runs on it, and
// the completion is called on it, exactly once. HTTPSFetcher itself holds
// only immutable Sendable values and may be shared freely.
//
// This folder (RelayCore/HTTPS) may import Model, TLS, IO, DNS and Sync;
// it knows nothing about MTA-STS policies, delivery or configuration.
import RelayDNS
import RelayIO
import RelayModel
import RelaySync
import RelayTLS
import Dispatch
#if canImport(Glibc)
import Glibc
#endif

public enum HTTPSFetchFailure: Error, Equatable, Sendable, CustomStringConvertible {
    /// No address for the host (the lookups' own words).
    case dns(String)
    /// No address took the connection (each address's error).
    case connect(String)
    /// The handshake failed, or the chain or the name did not verify.
    case tls(TLSFailure)
    /// A 3xx; the Location (if any) is reported, never followed.
    case redirect(Int, String?)
    /// Any other status but 200.
    case status(Int)
    /// A 200 whose media type is not text/plain: the Content-Type as sent
    /// ("" when there was none).
    case mediaType(String)
    /// The body is over the cap.
    case tooLarge
    /// The whole fetch ran past its deadline.
    case timeout
    /// The response broke HTTP/1.1 framing.
    case malformed(String)
    /// The caller asked for something that cannot be a request (a host
    /// that is not a host name, a path that is not an origin-form path).
    case invalidRequest(String)

    public var description: String {
        switch self {
        case .dns(let why): return "DNS: \(why)"
        case .connect(let why): return "connect: \(why)"
        case .tls(let failure): return "TLS: \(failure)"
        case .redirect(let status, let location): return "redirect \(status) to \(location ?? "nowhere") (not followed)"
        case .status(let status): return "HTTP status \(status)"
        case .mediaType(let type): return type.isEmpty ? "no Content-Type (text/plain required)" : "media type \"\(type)\" (text/plain required)"
        case .tooLarge: return "body over \(HTTPResponseParser.Limits.mtaSTS.maxBodyBytes) bytes"
        case .timeout: return "timed out"
        case .malformed(let why): return "malformed response: \(why)"
        case .invalidRequest(let why): return "invalid request: \(why)"
        }
    }
}

public struct HTTPSFetcher: Sendable {
    public let resolver: any DNSResolving
    public let tlsContext: TLSContext
    public let timeoutSeconds: Int
    public let port: UInt16
    public let sourceAddress: IPAddress?

    /// `tlsContext` must be a client context; its trust store is the one
    /// the policy host's chain must lead to.
    public init(resolver: any DNSResolving, tlsContext: TLSContext, timeoutSeconds: Int = 60, port: UInt16 = 443,
                sourceAddress: IPAddress? = nil) {
        precondition(tlsContext.configuration.role == .client, "HTTPSFetcher needs a client TLS context")
        self.resolver = resolver
        self.tlsContext = tlsContext
        self.timeoutSeconds = timeoutSeconds
        self.port = port
        self.sourceAddress = sourceAddress
    }

    /// GET https://host/path. The completion runs on the fetch's own queue.
    public func fetch(host: String, path: String,
                      completion: @escaping @Sendable (Result<[UInt8], HTTPSFetchFailure>) -> Void) {
        let queue = DispatchQueue(label: "relayd.https.fetch")
        var name = host
        if name.hasSuffix(".") { name.removeLast() }
        guard DomainName.isValidHostname(name) else {
            return queue.async { completion(.failure(.invalidRequest("\"\(host)\" is not a host name"))) }
        }
        guard let request = Self.request(host: name, path: path, port: port) else {
            return queue.async { completion(.failure(.invalidRequest("\"\(path)\" is not a path"))) }
        }
        let run = HTTPSFetch(fetcher: self, host: name, request: request, judge: Self.judge, queue: queue,
                             completion: completion)
        queue.async { run.start() }
    }

    /// POST https://host/path with `body`. Success is any 2xx status (the
    /// response body is not read); a 3xx is reported, never followed; any
    /// other status is `.status`. The completion runs on the post's own queue.
    public func post(host: String, path: String, contentType: String, body: [UInt8],
                     completion: @escaping @Sendable (Result<Int, HTTPSFetchFailure>) -> Void) {
        let queue = DispatchQueue(label: "relayd.https.post")
        var name = host
        if name.hasSuffix(".") { name.removeLast() }
        guard DomainName.isValidHostname(name) else {
            return queue.async { completion(.failure(.invalidRequest("\"\(host)\" is not a host name"))) }
        }
        guard let request = Self.postRequest(host: name, path: path, port: port, contentType: contentType, body: body) else {
            return queue.async { completion(.failure(.invalidRequest("\"\(path)\" is not a path, or \"\(contentType)\" not a media type"))) }
        }
        let status = Locked(0)
        let run = HTTPSFetch(fetcher: self, host: name, request: request, judge: { head in
            switch head.status {
            case 200..<300: status.withLock { $0 = head.status }; return nil
            case 300..<400: return .redirect(head.status, head.values(of: "Location").first)
            default: return .status(head.status)
            }
        }, headIsEnough: true, queue: queue) { result in
            completion(result.map { _ in status.withLock { $0 } })
        }
        queue.async { run.start() }
    }

    /// The POST request bytes, or nil when `path` or `contentType` could
    /// end a line.
    static func postRequest(host: String, path: String, port: UInt16, contentType: String, body: [UInt8]) -> [UInt8]? {
        guard path.utf8.first == UInt8(ascii: "/"), path.utf8.allSatisfy({ $0 > 32 && $0 < 127 }),
              !contentType.isEmpty, contentType.utf8.allSatisfy({ $0 >= 32 && $0 < 127 }) else { return nil }
        let authority = port == 443 ? host : "\(host):\(port)"
        return Array(("POST \(path) HTTP/1.1\r\nHost: \(authority)\r\nUser-Agent: relayd\r\n"
            + "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n").utf8) + body
    }

    /// The request bytes, or nil when `path` is not `/` followed by
    /// visible ASCII (nothing that could end the request line).
    static func request(host: String, path: String, port: UInt16) -> [UInt8]? {
        guard path.utf8.first == UInt8(ascii: "/"), path.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else { return nil }
        // RFC 9110 §7.2: the port is named unless it is the scheme's default.
        let authority = port == 443 ? host : "\(host):\(port)"
        return Array(("GET \(path) HTTP/1.1\r\nHost: \(authority)\r\nUser-Agent: relayd\r\n"
            + "Accept: text/plain\r\nConnection: close\r\n\r\n").utf8)
    }

    /// What a response's status and fields mean for the fetch, before (and
    /// whatever) its body: nil if it may be the policy.
    static func judge(head: HTTPResponse) -> HTTPSFetchFailure? {
        switch head.status {
        case 200: break
        case 300..<400: return .redirect(head.status, head.values(of: "Location").first)
        default: return .status(head.status)
        }
        guard head.mediaType() == "text/plain" else {
            return .mediaType(head.values(of: "Content-Type").joined(separator: ", "))
        }
        return nil
    }

    /// The addresses of `name` in one answer, following CNAMEs inside it.
    static func addresses(of name: String, in response: DNSResponse, type: DNSType) -> [IPAddress] {
        let owners = DNSResponse.owners(of: name, in: response.answers)
        return response.answers.compactMap { record in
            guard owners.contains(DNSName.normalize(record.name)) else { return nil }
            switch record.data {
            case .a(let ip) where type == .a: return ip
            case .aaaa(let ip) where type == .aaaa: return ip
            default: return nil
            }
        }
    }
}

/// One fetch: DNS, then each address until one connects, then TLS, the
/// request and the response. Confined to `queue`: every method runs there
/// (the entry points assert it in debug builds), which is what makes it
/// @unchecked Sendable — the resolver's and the connector's callbacks
/// carry it to the queue and touch nothing on the way.
final class HTTPSFetch: ConnectionDelegate, @unchecked Sendable {
    private let fetcher: HTTPSFetcher
    private let host: String
    private let request: [UInt8]
    /// What the head means: nil when the exchange may go on.
    private let judge: @Sendable (HTTPResponse) -> HTTPSFetchFailure?
    /// A POST: a head that passes the judge is the whole answer.
    private let headIsEnough: Bool
    let queue: DispatchQueue
    private var completion: (@Sendable (Result<[UInt8], HTTPSFetchFailure>) -> Void)?
    /// Alive until the completion has run: the connection holds its
    /// delegate weakly.
    private var selfRetain: HTTPSFetch?
    private var deadline: DispatchTime = .now()
    private var timer: (any DispatchSourceTimer)?
    private var addresses: [IPAddress] = []
    private var lookupErrors: [String] = []
    private var connectErrors: [String] = []
    private var connection: Connection?
    private var parser = HTTPResponseParser(limits: .mtaSTS)
    private var headJudged = false

    init(fetcher: HTTPSFetcher, host: String, request: [UInt8],
         judge: @escaping @Sendable (HTTPResponse) -> HTTPSFetchFailure?, headIsEnough: Bool = false,
         queue: DispatchQueue, completion: @escaping @Sendable (Result<[UInt8], HTTPSFetchFailure>) -> Void) {
        self.fetcher = fetcher
        self.host = host
        self.request = request
        self.judge = judge
        self.headIsEnough = headIsEnough
        self.queue = queue
        self.completion = completion
    }

    func start() {
        dispatchPrecondition(condition: .onQueue(queue))
        selfRetain = self
        deadline = .now() + .seconds(fetcher.timeoutSeconds)
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.setEventHandler { [weak self] in self?.finish(.failure(.timeout)) }
        t.schedule(deadline: deadline)
        t.resume()
        timer = t
        lookUp(.a)
    }

    // MARK: DNS

    private func lookUp(_ type: DNSType) {
        fetcher.resolver.query(host, type) { [self] result in
            queue.async { self.lookedUp(type, result) }
        }
    }

    private func lookedUp(_ type: DNSType, _ result: Result<DNSResponse, DNSError>) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard completion != nil else { return }
        switch result {
        case .success(let r) where r.rcode == .noError || r.rcode == .nxDomain:
            addresses += HTTPSFetcher.addresses(of: host, in: r, type: type)
        case .success(let r):
            lookupErrors.append("\(host)/\(type): \(r.rcode)")
        case .failure(let e):
            lookupErrors.append("\(host)/\(type): \(e)")
        }
        if type == .a { return lookUp(.aaaa) }
        guard !addresses.isEmpty else {
            return finish(.failure(.dns(lookupErrors.isEmpty ? "no A or AAAA record for \(host)"
                                                              : lookupErrors.joined(separator: "; "))))
        }
        connectNext()
    }

    // MARK: connect

    private func connectNext() {
        guard !addresses.isEmpty else {
            return finish(.failure(.connect(connectErrors.joined(separator: "; "))))
        }
        let ip = addresses.removeFirst()
        let left = Double(deadline.uptimeNanoseconds) - Double(DispatchTime.now().uptimeNanoseconds)
        let seconds = max(1, Int((left / 1e9).rounded(.up)))
        Connector.connect(to: ip, port: fetcher.port, from: fetcher.sourceAddress, timeoutSeconds: seconds,
                          queue: queue) { [self] result in self.connected(ip, result) }
    }

    private func connected(_ ip: IPAddress, _ result: Result<Int32, SystemError>) {
        dispatchPrecondition(condition: .onQueue(queue))
        switch result {
        case .failure(let error):
            guard completion != nil else { return }
            connectErrors.append("\(ip): \(error)")
            connectNext()
        case .success(let fd):
            // Past the deadline the fd was never anyone's: no sources yet.
            guard completion != nil else { Glibc.close(fd); return }
            let c = Connection(fd: fd, peer: ip, queue: queue)
            connection = c
            c.delegate = self
            c.start()
            let options = TLSConnection.Options(serverName: host, expectedHostname: host, requireVerification: true)
            do {
                try c.startClientTLS(context: fetcher.tlsContext, options: options)
            } catch {
                finish(.failure(.tls(TLSFailure(kind: .protocolError, detail: "\(error)"))))
            }
        }
    }

    // MARK: the exchange

    func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard completion != nil else { return }
        // requireVerification already aborts an unverified handshake; this
        // makes "never without verification" hold even if that changed.
        guard info.verification == .trusted else {
            if case .failed(let failure) = info.verification { return finish(.failure(.tls(failure))) }
            return finish(.failure(.tls(TLSFailure(kind: .noPeerCertificate, detail: "\(info.verification)"))))
        }
        connection.send(request)
    }

    func connection(_ connection: Connection, tlsFailed failure: TLSFailure) {
        dispatchPrecondition(condition: .onQueue(queue))
        finish(.failure(.tls(failure)))
    }

    func connection(_ connection: Connection, received bytes: [UInt8]) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard completion != nil else { return }
        handle(parser.receive(bytes))
    }

    func connectionTimedOut(_ connection: Connection) {
        dispatchPrecondition(condition: .onQueue(queue))
        finish(.failure(.timeout))
    }

    func connectionClosed(_ connection: Connection, reason: String) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard completion != nil else { return }
        guard connection.isTLSActive else {
            return finish(.failure(.tls(TLSFailure(kind: .peerClosed, detail: reason))))
        }
        // A body that runs to the close is complete only if TLS says so
        // (close_notify); a bare TCP close may be an attacker's truncation.
        // Connection reports the difference only in the reason's words.
        if parser.bodyEndsAtClose && reason != "peer closed TLS" {
            return finish(.failure(.malformed("connection closed without close_notify in a body framed by the close (\(reason))")))
        }
        handle(parser.finish())
    }

    /// The head is judged as soon as it is complete, before the body: a
    /// redirect or a wrong media type ends the fetch without reading on.
    private func handle(_ event: HTTPParseEvent) {
        if !headJudged, let head = parser.head {
            headJudged = true
            if let failure = judge(head) { return finish(.failure(failure)) }
            if headIsEnough { return finish(.success([])) }
        }
        switch event {
        case .needMore: return
        case .complete(let response): finish(.success(response.body))
        case .failed(.tooLarge): finish(.failure(.tooLarge))
        case .failed(.malformed(let why)): finish(.failure(.malformed(why)))
        }
    }

    private func finish(_ result: Result<[UInt8], HTTPSFetchFailure>) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let completion else { return }
        self.completion = nil
        timer?.cancel()
        timer = nil
        if let connection, connection.isOpen {
            if case .success = result { connection.close() } else { connection.abort(reason: "fetch over") }
        }
        connection = nil
        completion(result)
        selfRetain = nil
    }
}
