import Foundation
import Testing
@testable import RelayModel
@testable import RelayQueue

/// The queue records of the per-message controls (REQUIRETLS, TLS-Required:
/// No, escalation, a forwarded copy's TLS floor): written only when set, so
/// files from before them read back unchanged, and anything malformed is a
/// damaged file rather than a guess.
@Suite struct MessageControlRecordTests {
    static func message() -> QueuedMessage {
        var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<a@clinic.example>")!),
                           origin: Envelope.Origin(clientAddress: "192.0.2.1", heloName: "c.test", esmtp: true))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@example.org>")!)]
        return QueuedMessage(id: QueueID.make(microseconds: 1_700_000_000_000_000, random: 9), arrival: 1_700_000_000,
                             envelope: env, body: Array("Subject: x\r\n\r\nbody\r\n".utf8))
    }

    static func reencoded(_ m: QueuedMessage, replacing old: String, with new: String) -> [UInt8] {
        var text = String(decoding: QueueFile.encodeHeader(m), as: UTF8.self).replacingOccurrences(of: old, with: new)
        text += String(decoding: m.body, as: UTF8.self)
        var bytes = Array(text.utf8)
        bytes += QueueFile.trailer(checksumOfHeaderAndBody: QueueFile.fnv1a64(bytes[...]))
        return bytes
    }

    @Test func plainMessageHasNoneOfTheRecords() throws {
        let text = String(decoding: QueueFile.encode(Self.message()), as: UTF8.self)
        for record in ["requiretls", "tls-required-no", "escalated"] { #expect(!text.contains(record)) }
        #expect(text.contains("\nrcpt u@example.org - -\n"))
        let back = try QueueFile.decode(QueueFile.encode(Self.message())).envelope
        #expect(!back.requireTLS && !back.tlsRequiredNo && back.escalation == nil)
        #expect(back.recipients[0].tlsFloor == nil && back.recipients[0].forwardedFrom == nil)
    }

    @Test func everyControlRoundTrips() throws {
        var m = Self.message()
        m.envelope.requireTLS = true
        m.envelope.tlsRequiredNo = true
        m.envelope.escalation = .init(level: .verify, source: .subjectTag)
        m.envelope.recipients.append(Envelope.Recipient(
            mailbox: Mailbox.parseForwardPath("<dr.smith@partner.example>")!, originalRecipient: "rfc822;info@clinic.example",
            forwardedFrom: Mailbox.parseForwardPath("<info@clinic.example>")!, tlsFloor: .forced))
        let bytes = QueueFile.encode(m)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains("\nrequiretls 1\ntls-required-no 1\nescalated verify subject-tag\n"))
        #expect(text.contains("\nrcpt dr.smith@partner.example - rfc822;info@clinic.example forced info@clinic.example\n"))
        #expect(try QueueFile.decode(bytes) == m)
        #expect(m.envelope.escalation?.description == "verify by subject-tag")
    }

    @Test(arguments: [
        ("requiretls 1", "requiretls yes", "requiretls"),
        ("tls-required-no 1", "tls-required-no 0", "tls-required-no"),
        ("escalated verify subject-tag", "escalated strongest subject-tag", "escalated"),
        ("escalated verify subject-tag", "escalated verify carrier-pigeon", "escalated"),
        ("escalated verify subject-tag", "escalated verify", "escalated"),
        (" forced info@clinic.example\n", " maximal info@clinic.example\n", "rcpt floor"),
        (" forced info@clinic.example\n", " forced not-an-address\n", "rcpt forwarded-from"),
        (" forced info@clinic.example\n", " forced\n", "rcpt"),
    ])
    func malformedControlRecordsAreDamage(good: String, bad: String, record: String) throws {
        var m = Self.message()
        m.envelope.requireTLS = true
        m.envelope.tlsRequiredNo = true
        m.envelope.escalation = .init(level: .verify, source: .subjectTag)
        m.envelope.recipients[0].tlsFloor = .forced
        m.envelope.recipients[0].forwardedFrom = Mailbox.parseForwardPath("<info@clinic.example>")!
        #expect(try QueueFile.decode(QueueFile.encode(m)) == m)
        #expect(throws: QueueFileError.badRecord(record)) { try QueueFile.decode(Self.reencoded(m, replacing: good, with: bad)) }
    }
}
