// The driver of one TLS probe: connect to one address, run a ProbeSession
// over a client Connection, and report what was found — STARTTLS, the
// negotiated TLS, the certificate chain and its verification against the
// trust store and the MX name, or the step that failed. Used by `relayd
// probe` and meant for the daemon's re-probe of learned domains, so it
// prints nothing and decides nothing.
//
// The handshake never requires verification: the chain and name are
// always checked and reported, but a certificate that fails them does not
// stop the handshake (the probe's question is what a level would do, and
// forced would carry on). Each step has its own deadline, armed when the
// step begins, so a server that dribbles bytes cannot stretch a step.
import Dispatch
import RelayIO
import RelayModel
import RelaySMTP
import RelayTLS

/// What one address showed.
public struct HostProbeResult: Sendable, Equatable {
    public let host: String
    public let address: IPAddress
    public let port: UInt16
    /// The dialogue's findings; their failure (if any) names the step.
    public let findings: ProbeFindings
    /// The negotiated session (nil unless the handshake completed).
    public let tls: TLSSessionInfo?
    /// The server's certificates, leaf first.
    public let certificates: [PeerCertificate]

    public init(host: String, address: IPAddress, port: UInt16, findings: ProbeFindings,
                tls: TLSSessionInfo? = nil, certificates: [PeerCertificate] = []) {
        self.host = host
        self.address = address
        self.port = port
        self.findings = findings
        self.tls = tls
        self.certificates = certificates
    }

    /// nil if EHLO was never answered.
    public var starttlsOffered: Bool? { findings.starttlsOffered }
    public var failure: ProbeFailure? { findings.failure }
}

public final class HostProber: Sendable {
    let tlsContext: TLSContext
    let heloName: String
    let timeoutSeconds: Int
    let sourceAddress: IPAddress?

    public init(tlsContext: TLSContext, heloName: String, timeoutSeconds: Int, sourceAddress: IPAddress?) {
        self.tlsContext = tlsContext
        self.heloName = heloName
        self.timeoutSeconds = max(1, timeoutSeconds)
        self.sourceAddress = sourceAddress
    }

    /// Probes `address` as the MX host `host` (the SNI and the name the
    /// certificate must carry). `completion` runs once, on the probe's own
    /// queue.
    /// `dane`: the host's usable TLSA records; the handshake is then
    /// judged by them (verification says whether DANE authenticated the
    /// server), as delivery would.
    public func probe(host: String, address: IPAddress, port: UInt16, dane: DANEPolicy? = nil,
                      completion: @escaping @Sendable (HostProbeResult) -> Void) {
        let queue = DispatchQueue(label: "relayd.probe.\(address)")
        Connector.connect(to: address, port: port, from: sourceAddress, timeoutSeconds: timeoutSeconds,
                          queue: queue) { [self] result in
            switch result {
            case .failure(let e):
                var findings = ProbeFindings()
                findings.failure = ProbeFailure(step: .connect, detail: e.description)
                completion(HostProbeResult(host: host, address: address, port: port, findings: findings))
            case .success(let fd):
                run(fd: fd, host: host, address: address, port: port, dane: dane, queue: queue, completion: completion)
            }
        }
    }

    /// Runs the dialogue over a connected non-blocking socket (which the
    /// connection then owns). On `queue`.
    func run(fd: Int32, host: String, address: IPAddress, port: UInt16, dane: DANEPolicy? = nil, queue: DispatchQueue,
             completion: @escaping @Sendable (HostProbeResult) -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        let connection = Connection(fd: fd, peer: address, queue: queue)
        var options = TLSConnection.Options(serverName: host, expectedHostname: host, requireVerification: false)
        if let dane { options = TLSConnection.Options(serverName: host, requireVerification: false, dane: dane) }
        ProbeRun(session: ProbeSession(heloName: heloName), connection: connection, tlsContext: tlsContext,
                 tlsOptions: options, timeoutSeconds: timeoutSeconds) { findings, tls, chain in
            completion(HostProbeResult(host: host, address: address, port: port, findings: findings,
                                       tls: tls, certificates: chain))
        }.start()
    }
}

/// One ProbeSession over one Connection; confined to the connection's
/// queue like ClientRun (it is never handed to another).
final class ProbeRun: ConnectionDelegate {
    private var session: ProbeSession
    private let connection: Connection
    private let tlsContext: TLSContext
    private let tlsOptions: TLSConnection.Options
    private let timeoutSeconds: Int
    private var tls: TLSSessionInfo?
    private var chain: [PeerCertificate] = []
    private var completion: ((ProbeFindings, TLSSessionInfo?, [PeerCertificate]) -> Void)?
    /// The step whose deadline is armed.
    private var timedStep: ProbeStep?
    /// Keeps the run alive while the connection holds only a weak delegate.
    private var selfRetain: ProbeRun?

    init(session: ProbeSession, connection: Connection, tlsContext: TLSContext, tlsOptions: TLSConnection.Options,
         timeoutSeconds: Int, completion: @escaping (ProbeFindings, TLSSessionInfo?, [PeerCertificate]) -> Void) {
        self.session = session
        self.connection = connection
        self.tlsContext = tlsContext
        self.tlsOptions = tlsOptions
        self.timeoutSeconds = timeoutSeconds
        self.completion = completion
    }

    func start() {
        selfRetain = self
        connection.delegate = self
        connection.start()
        armDeadline()
    }

    /// A new step gets a fresh deadline; bytes within a step do not.
    private func armDeadline() {
        guard completion != nil, timedStep != session.step else { return }
        timedStep = session.step
        connection.setTimeout(after: Double(timeoutSeconds))
    }

    private func perform(_ actions: [ProbeAction]) {
        for action in actions {
            switch action {
            case .send(let bytes):
                connection.send(bytes)
            case .startTLS:
                do { try connection.startClientTLS(context: tlsContext, options: tlsOptions) } catch {
                    perform(session.tlsFailed(TLSFailure(kind: .protocolError, detail: "\(error)")))
                }
            case .close:
                connection.close()
            case .finished(let findings):
                finish(findings)
            }
        }
        armDeadline()
    }

    private func finish(_ findings: ProbeFindings) {
        guard let completion else { return }
        self.completion = nil
        completion(findings, tls, chain)
    }

    func connection(_ connection: Connection, received bytes: [UInt8]) {
        perform(session.receive(bytes))
    }

    func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo) {
        tls = info
        chain = connection.peerCertificates()
        perform(session.tlsEstablished())
    }

    func connection(_ connection: Connection, tlsFailed failure: TLSFailure) {
        perform(session.tlsFailed(failure))
    }

    func connectionTimedOut(_ connection: Connection) {
        perform(session.timedOut(after: timeoutSeconds))
        connection.abort(reason: "probe timeout")
    }

    func connectionClosed(_ connection: Connection, reason: String) {
        perform(session.connectionClosed())
        selfRetain = nil
    }
}
