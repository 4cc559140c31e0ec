// `relayd queue list` filters as a pure function over QueueEntry values: a
// known mix of messages (domains, ages, folders, last errors) and which of
// them each filter keeps, `--reason tls` and the TLS failure type included.
import Testing
@testable import RelayModel
@testable import RelayQueue

private let now = 1_800_000_000

private func entry(_ n: Int, to domains: [String], folder: Spool.Folder = .deferred, age: Int = 60,
                   recipients: [DeliveryState.Recipient]? = nil) -> QueueEntry {
    var envelope = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<s@sender.test>")!),
                            origin: Envelope.Origin(clientAddress: "127.0.0.1"))
    envelope.recipients = domains.map { Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<user@\($0)>")!) }
    let id = QueueID.make(microseconds: UInt64(n), random: UInt32(n))
    var state: DeliveryState?
    if let recipients {
        var s = DeliveryState(recipientCount: 0)
        s.attempts = 1
        s.recipients = recipients
        state = s
    }
    return QueueEntry(id: id, folder: folder, message: QueuedMessage(id: id, arrival: now - age, envelope: envelope, body: []), state: state)
}

private let notOffered = DeliveryState.Recipient(status: .pending, detail: "TLS not offered by mx.plain.test[127.0.0.22]:25 (policy forced)",
                                                 enhancedStatus: "4.7.10",
                                                 tlsDetail: "TLS not offered by mx.plain.test[127.0.0.22]:25 (policy forced)")
private let untrusted = DeliveryState.Recipient(status: .pending,
                                                detail: "TLS with mx.bad.test[127.0.0.25]:25 failed: certificate-untrusted: self-signed certificate",
                                                enhancedStatus: "4.7.15",
                                                tlsDetail: "TLS with mx.bad.test[127.0.0.25]:25 failed: certificate-untrusted: self-signed certificate")
private let refused = DeliveryState.Recipient(status: .pending, detail: "mx.down.test[127.0.0.9]:25: connect: Connection refused",
                                              enhancedStatus: "4.4.1")
/// Refused now, after an earlier TLS failure: waits on the network, not TLS.
private let refusedAfterTLS = DeliveryState.Recipient(status: .pending, detail: "mx.plain.test[127.0.0.22]:25: connect: Connection refused",
                                                      enhancedStatus: "4.4.1", tlsDetail: notOffered.tlsDetail)
private let authRefused = DeliveryState.Recipient(status: .pending, detail: "smart[10.0.0.1]:587 refused our AUTH: 535 5.7.8 no",
                                                  enhancedStatus: "4.7.8")
private let delivered = DeliveryState.Recipient(status: .delivered, detail: "250 2.0.0 ok")

private let mix: [QueueEntry] = [
    entry(1, to: ["plain.test"], age: 7200, recipients: [notOffered]),
    entry(2, to: ["bad.test", "ok.test"], age: 600, recipients: [untrusted, delivered]),
    entry(3, to: ["down.test"], age: 86400 * 2, recipients: [refused]),
    entry(4, to: ["plain.test"], folder: .hold, age: 30, recipients: [refusedAfterTLS]),
    entry(5, to: ["Fresh.Test"], folder: .incoming, age: 5),
    entry(6, to: ["smart.test"], age: 100, recipients: [authRefused]),
]

private func ids(_ f: QueueFilter) -> [Int] {
    f.apply(mix, now: now).map { e in mix.firstIndex { $0.id == e.id }! + 1 }
}

@Suite struct QueueFilters {
    @Test func noFilterKeepsEverything() {
        #expect(ids(QueueFilter()) == [1, 2, 3, 4, 5, 6])
    }

    @Test func byDomainCaseInsensitively() {
        #expect(ids(QueueFilter(domain: "plain.test")) == [1, 4])
        #expect(ids(QueueFilter(domain: "OK.test")) == [2], "any recipient's domain, delivered ones too")
        #expect(ids(QueueFilter(domain: "fresh.test")) == [5])
        #expect(ids(QueueFilter(domain: "nowhere.test")) == [])
    }

    @Test func byAge() {
        #expect(ids(QueueFilter(olderThan: 3600)) == [1, 3])
        #expect(ids(QueueFilter(olderThan: 600)) == [1, 2, 3], "at least that old: exactly 600 s counts")
        #expect(ids(QueueFilter(olderThan: 0)) == [1, 2, 3, 4, 5, 6])
    }

    @Test func byState() {
        #expect(ids(QueueFilter(folder: .hold)) == [4])
        #expect(ids(QueueFilter(folder: .incoming)) == [5])
        #expect(ids(QueueFilter(folder: .deferred)) == [1, 2, 3, 6])
        #expect(ids(QueueFilter(folder: .active)) == [])
        #expect(QueueFilter(folder: .hold).folders == [.hold])
        #expect(QueueFilter().folders == [.incoming, .active, .deferred, .hold])
    }

    @Test func reasonTLSSelectsMessagesWaitingOnTLSOnly() {
        #expect(ids(QueueFilter(reason: "tls")) == [1, 2])
        #expect(ids(QueueFilter(reason: "TLS")) == [1, 2])
        // 4: its last failure is a refused connection, though TLS failed before.
        // 6: 4.7.8 is the relay refusing our AUTH, not TLS.
        #expect(!refusedAfterTLS.waitsOnTLS && !authRefused.waitsOnTLS && !delivered.waitsOnTLS)
    }

    @Test func theTLSFailureType() {
        #expect(notOffered.tlsFailureType == "starttls-not-offered")
        #expect(untrusted.tlsFailureType == "certificate-untrusted")
        let stsMX = DeliveryState.Recipient(status: .pending, detail: "no MX host of sts.test is listed in its MTA-STS policy (id 1)",
                                            enhancedStatus: "4.7.5", tlsDetail: "no MX host of sts.test is listed in its MTA-STS policy (id 1)")
        #expect(stsMX.tlsFailureType == "mta-sts-mx-not-listed")
        let startTLSRefused = DeliveryState.Recipient(status: .pending, detail: "STARTTLS refused by mx[1.2.3.4]:25: 454 4.7.0 no",
                                                      enhancedStatus: "4.7.10", tlsDetail: "STARTTLS refused by mx[1.2.3.4]:25: 454 4.7.0 no")
        #expect(startTLSRefused.tlsFailureType == "starttls-refused")
        let dane = DeliveryState.Recipient(status: .pending, detail: "mx.d.test: TLSA lookup failed (DANE)", enhancedStatus: "4.7.5")
        #expect(dane.tlsFailureType == "dane")
        #expect(refused.tlsFailureType == nil && refusedAfterTLS.tlsFailureType == nil)
    }

    @Test func reasonTextSearchesPendingErrors() {
        #expect(ids(QueueFilter(reason: "connection refused")) == [3, 4])
        #expect(ids(QueueFilter(reason: "self-signed")) == [2])
        #expect(ids(QueueFilter(reason: "250 2.0.0")) == [], "a delivered recipient's reply is not a reason to wait")
        #expect(ids(QueueFilter(reason: "not offered")) == [1, 4], "the kept TLS reason counts for text")
    }

    @Test func filtersCombine() {
        #expect(ids(QueueFilter(domain: "plain.test", reason: "tls")) == [1])
        #expect(ids(QueueFilter(olderThan: 300, folder: .deferred, reason: "tls")) == [1, 2])
        #expect(ids(QueueFilter(domain: "plain.test", folder: .hold)) == [4])
        #expect(ids(QueueFilter(domain: "down.test", olderThan: 86400 * 3)) == [])
    }
}
