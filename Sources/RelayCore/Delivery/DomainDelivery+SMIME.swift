// The S/MIME channel (`channel = "smime"`): when the level a message asked
// for (an escalation) or its domain's entry demands cannot be had because
// TLS could not be, relayd encrypts the message to each waiting
// recipient's certificate ([smime] certificate_directory, one PEM file per
// address) and delivers that copy at the domain's normal level — S/MIME
// inside, TLS outside where the receiver offers it. A recipient without a
// usable certificate keeps waiting, and the failure says what was missing,
// so the bounce at the queue lifetime tells the sender.
import RelayConfig
import RelayModel
import RelayQueue
import RelayTLS
import Dispatch
import Logging

extension DomainDelivery {
    func sendEncrypted(_ waiting: [Int], results: [Int: RecipientResult], lifetimeExceeded: Bool,
                       completion: @escaping (DomainDeliveryReport) -> Void) {
        var merged = results
        var recipients: [(index: Int, recipient: SMIMERecipient)] = []
        let directory = env.config.smime.certificateDirectory.map(SMIMECertificateDirectory.init(path:))
        for i in waiting {
            let address = message.envelope.recipients[i].mailbox.description
            let missing: String
            do {
                if let r = try directory?.recipient(for: address, now: env.now()) {
                    recipients.append((i, r)); continue
                }
                missing = directory == nil ? "no [smime] certificate_directory is set"
                    : "no S/MIME certificate for <\(address)> in \(directory!.path)"
            } catch {
                missing = "the S/MIME certificate for <\(address)> is unusable: \(error)"
            }
            if case .failed(let f)? = results[i] { merged[i] = .failed(Self.adding(missing, to: f)) }
            env.logger.warning("S/MIME channel: no certificate; the recipient waits for TLS", metadata: [
                "id": "\(message.id)", "domain": "\(domain)", "rcpt": "\(address)", "reason": "\(missing)"])
        }
        guard !recipients.isEmpty else {
            completion(DomainDeliveryReport(decision: decision, results: merged, lifetimeExceeded: lifetimeExceeded))
            return
        }
        // One copy per recipient: a CMS names every recipient's certificate
        // (issuer and serial), so a shared copy would show each one who
        // else got it, Bcc recipients included. Encrypting is CPU work on
        // the whole body: done off the attempt queue, then back on it.
        let body = message.body
        let waitingResults = merged
        let certified = recipients
        channelCompletion = completion
        DispatchQueue.global(qos: .utility).async { [self] in
            let plaintext: Result<[UInt8], any Error> = Result { try body.whole() }
            let copies = certified.map { r in
                (index: r.index, recipient: r.recipient,
                 copy: plaintext.flatMap { p in Result { try SMIMEEncryption.encrypt(p, to: [r.recipient]) } })
            }
            env.queue.async { [self] in
                guard let completion = channelCompletion else { return }
                channelCompletion = nil
                deliverCopies(copies, merged: waitingResults, lifetimeExceeded: lifetimeExceeded, completion: completion)
            }
        }
    }

    private func deliverCopies(_ copies: [(index: Int, recipient: SMIMERecipient, copy: Result<[UInt8], any Error>)],
                               merged start: [Int: RecipientResult], lifetimeExceeded: Bool,
                               completion: @escaping (DomainDeliveryReport) -> Void) {
        var merged = start
        var legs: [(Int, SpooledMessage)] = []
        for c in copies {
            switch c.copy {
            case .success(let bytes):
                legs.append((c.index, SpooledMessage(id: message.id, arrival: message.arrival, envelope: message.envelope,
                                                     body: .memory(bytes))))
            case .failure(let error):
                if case .failed(let f)? = merged[c.index] {
                    merged[c.index] = .failed(Self.adding("S/MIME encryption failed: \(error)", to: f))
                }
                env.logger.error("S/MIME channel: encryption failed", metadata: [
                    "id": "\(message.id)", "domain": "\(domain)", "rcpt": "\(c.recipient.address)", "error": "\(error)"])
            }
        }
        let decision = self.decision
        guard !legs.isEmpty else {
            completion(DomainDeliveryReport(decision: decision, results: merged, lifetimeExceeded: lifetimeExceeded))
            return
        }
        env.logger.notice("S/MIME channel: TLS unavailable; delivering encrypted copies", metadata: [
            "id": "\(message.id)", "domain": "\(domain)", "nrcpt": "\(legs.count)",
            "cipher": "\(SMIMEEncryption.cipher(for: copies.map(\.recipient)).rawValue)"])
        // Each leg reports on env.queue (the same serial queue), so the
        // count and the merged results are touched there only.
        var left = legs.count
        for (index, copy) in legs {
            DomainDelivery(env: env, message: copy, domain: domain, recipientIndexes: [index], channelLeg: true).run { report in
                merged[index] = report.results[index] ?? merged[index]
                left -= 1
                if left == 0 {
                    completion(DomainDeliveryReport(decision: decision, results: merged, lifetimeExceeded: lifetimeExceeded))
                }
            }
        }
    }

    static func adding(_ note: String, to f: DeliveryFailure) -> DeliveryFailure {
        DeliveryFailure(f.kind, status: f.status, reason: f.reason + "; " + note, cause: f.cause, remoteReply: f.remoteReply)
    }
}
