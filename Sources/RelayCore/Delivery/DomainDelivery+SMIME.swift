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
        let encrypted: [UInt8]
        do {
            encrypted = try SMIMEEncryption.encrypt(try message.body.whole(), to: recipients.map(\.recipient))
        } catch {
            for (i, _) in recipients {
                if case .failed(let f)? = results[i] { merged[i] = .failed(Self.adding("S/MIME encryption failed: \(error)", to: f)) }
            }
            env.logger.error("S/MIME channel: encryption failed", metadata: [
                "id": "\(message.id)", "domain": "\(domain)", "error": "\(error)"])
            completion(DomainDeliveryReport(decision: decision, results: merged, lifetimeExceeded: lifetimeExceeded))
            return
        }
        env.logger.notice("S/MIME channel: TLS unavailable; delivering an encrypted copy", metadata: [
            "id": "\(message.id)", "domain": "\(domain)", "nrcpt": "\(recipients.count)",
            "cipher": "\(SMIMEEncryption.cipher(for: recipients.map(\.recipient)).rawValue)"])
        let copy = SpooledMessage(id: message.id, arrival: message.arrival, envelope: message.envelope, body: .memory(encrypted))
        let leg = DomainDelivery(env: env, message: copy, domain: domain, recipientIndexes: recipients.map(\.index),
                                 channelLeg: true)
        let decision = self.decision
        leg.run { report in
            for (i, _) in recipients { merged[i] = report.results[i] ?? merged[i] }
            completion(DomainDeliveryReport(decision: decision, results: merged, lifetimeExceeded: lifetimeExceeded))
        }
    }

    static func adding(_ note: String, to f: DeliveryFailure) -> DeliveryFailure {
        DeliveryFailure(f.kind, status: f.status, reason: f.reason + "; " + note, cause: f.cause, remoteReply: f.remoteReply)
    }
}
