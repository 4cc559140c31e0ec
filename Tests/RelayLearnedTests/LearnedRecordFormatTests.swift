// The record's file form: a full record survives the round trip, and
// hostile or damaged content is refused whole, never half-read; the file
// store sets such a record aside and reports it.
import Foundation
import RelayModel
import RelayPolicy
import RelayQueue
import RelaySync
import RelayTestSupport
import Testing
@testable import RelayLearned

@Suite struct LearnedRecordFormatTests {
    static func full() -> LearnedRecord {
        var r = LearnedRecord(domain: "partner.example", created: 1_764_633_600)
        r.observeSession(host: "mx1.partner.example", seen: .verified, reason: "verified TLS", key: String(repeating: "ab", count: 32),
                         at: 1_764_633_700)
        r.observeSession(host: "mx2.partner.example", seen: .tls, reason: "TLS, untrusted(hostname-mismatch)", key: nil,
                         at: 1_764_720_100)
        r.observeSession(host: "mx2.partner.example", seen: .plaintext, reason: "STARTTLS refused: 454 4.7.0 TLS not available",
                         key: nil, at: 1_764_720_200)
        r.observeProbe(.init(at: 1_764_720_300, seen: .plaintext, host: "mx1.partner.example", starttlsOffered: false,
                             handshake: false, verified: false, version: "", detail: "no STARTTLS in EHLO"),
                       hosts: [("mx1.partner.example", .plaintext)], mx: ["mx1.partner.example", "mx2.partner.example"], keys: [])
        r.pin = .init(level: .forced, until: 1_767_225_600, reason: "contract §4 (TLS only)", by: "alice via sudo", at: 1_764_720_400)
        r.relaxedAt = 1_764_000_000
        r.relaxations = 2
        return r
    }

    @Test func roundTrip() throws {
        let r = Self.full()
        #expect(r.below?.sessions == 1)
        #expect(r.probesBelowSince == 1_764_720_300)
        let back = try LearnedRecordFormat.decode(LearnedRecordFormat.encode(r))
        #expect(back == r)
    }

    @Test func emptyTextFieldsRoundTrip() throws {
        var r = LearnedRecord(domain: "a.example", created: 5)
        r.pin = .init(level: .verify, until: nil, reason: "", by: "", at: 6)
        #expect(try LearnedRecordFormat.decode(LearnedRecordFormat.encode(r)) == r)
    }

    static let good = String(decoding: LearnedRecordFormat.encode(full()), as: UTF8.self)

    /// Each line of a good record replaced or added: every variant must be
    /// refused.
    @Test(arguments: [
        ("magic", "relayd-learned 1", "relayd-learned 2"),
        ("domain with slash", "domain partner.example", "domain ../etc"),
        ("domain upper case", "domain partner.example", "domain Partner.example"),
        ("negative time", "created 1764633600", "created -1"),
        ("number overflow", "created 1764633600", "created 99999999999999999999"),
        ("days above count", "mx2.partner.example plaintext 1764720200 1764720200 1 1", "mx2.partner.example plaintext 1764720200 1764720200 1 2"),
        ("first after last", "mx2.partner.example plaintext 1764720200 1764720200 1 1", "mx2.partner.example plaintext 1764720201 1764720200 1 1"),
        ("non-ASCII", "mx mx1.partner.example", "mx mx1.pärtner.example"),
        ("unknown level", "evidence plaintext", "evidence ssl3"),
        ("extra field", "below 1764720200 1", "below 1764720200 1 9"),
        ("zero sessions", "below 1764720200 1", "below 1764720200 0"),
        ("bad xtext", "probe 1764720300 plaintext mx1.partner.example 0 0 0 +", "probe 1764720300 plaintext mx1.partner.example 0 0 0 +ZZ"),
        ("bad flag", "probe 1764720300 plaintext mx1.partner.example 0 0 0", "probe 1764720300 plaintext mx1.partner.example 0 2 0"),
        ("pin tls-exclusive", "pin forced", "pin tls-exclusive"),
        ("double space", "relaxed 1764000000 2", "relaxed  1764000000 2"),
        ("carriage return", "relaxed 1764000000 2", "relaxed 1764000000 2\r"),
        ("unknown key", "relaxed 1764000000 2", "relaxed 1764000000 2\nsurprise 1"),
        ("repeated single", "relaxed 1764000000 2", "relaxed 1764000000 2\nrelaxed 1764000000 2"),
        ("repeated evidence", "relaxed 1764000000 2", "relaxed 1764000000 2\nevidence tls 1 1 1 1\nevidence tls 1 1 1 1"),
        ("bad key", "relaxed 1764000000 2", "relaxed 1764000000 2\nkey ABCDEF"),
        ("control in host", "mx mx1.partner.example", "mx mx1.partner\u{7}.example"),
        ("empty mx", "mx mx1.partner.example mx2.partner.example", "mx"),
        ("NUL", "relaxed 1764000000 2", "relaxed 1764000000 2\u{0}"),
    ])
    func refusesDamagedLines(what: String, find: String, replace: String) throws {
        #expect(Self.good.contains(find), "fixture has no \(find)")
        let bad = Self.good.replacingOccurrences(of: find, with: replace)
        #expect(throws: LearnedRecordError.self, "\(what)") { try LearnedRecordFormat.decode(Array(bad.utf8)) }
    }

    @Test func refusesTruncationAtEveryByte() {
        let bytes = Array(Self.good.utf8)
        var accepted = 0
        for n in 0..<bytes.count {
            if (try? LearnedRecordFormat.decode(Array(bytes[..<n]))) != nil { accepted += 1 }
        }
        // A cut exactly after a line is a shorter record that still parses
        // (the store's check line is what catches those); nothing else is.
        let lineEnds = bytes.indices.filter { bytes[$0] == 10 }.map { $0 + 1 }.filter { $0 < bytes.count }
        #expect(accepted <= lineEnds.count)
    }

    @Test func refusesTooManyHosts() {
        var text = "relayd-learned 1\ndomain a.example\ncreated 1\n"
        for i in 0...LearnedRecord.maxHosts { text += "host mx\(i).a.example tls 1 1 1 1\n" }
        #expect(throws: LearnedRecordError.self) { try LearnedRecordFormat.decode(Array(text.utf8)) }
    }

    @Test func randomBytesNeverCrashTheDecoder() {
        var rng = SplitMix64(state: 12)
        let good = Array(Self.good.utf8)
        for _ in 0..<2000 {
            var b = good
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if let r = try? LearnedRecordFormat.decode(b) {
                // Whatever parses must write back to something that parses to it.
                #expect((try? LearnedRecordFormat.decode(LearnedRecordFormat.encode(r))) == r)
            }
        }
    }

    // MARK: the file store

    @Test func fileStoreRoundTripAndDamagedRecordSetAside() throws {
        let tmp = try TemporarySpool()
        let damaged = Locked<[String]>([])
        let store = FileLearnedStore(spool: tmp.spool, now: { 1_764_800_000 }, onDamaged: { d, aside in
            damaged.withLock { $0.append("\(d) \(aside)") }
        })
        try store.put(Self.full())
        #expect(try store.get("partner.example") == Self.full())
        #expect(try store.list() == ["partner.example"])

        // One flipped byte: the check line no longer matches.
        let path = tmp.dir + "/learned/partner.example"
        var bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[30] ^= 0x20
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(try store.get("partner.example") == nil)
        #expect(damaged.withLock { $0 } == ["partner.example partner.example.damaged-1764800000 (check line does not match)"])
        #expect(try store.list().isEmpty)
        #expect(FileManager.default.fileExists(atPath: path + ".damaged-1764800000"))

        // Sealed but not a record (written by something else).
        try tmp.spool.writeRecord("learned", "other.example", Array("hello\n".utf8))
        #expect(try store.get("other.example") == nil)
        #expect(damaged.withLock { $0.count } == 2)

        #expect(throws: LearnedRecordError.self) { try store.get("../spool") }
        try store.audit("line one\nwith a newline")
        let audit = try String(contentsOfFile: store.auditPath, encoding: .utf8)
        #expect(audit == "line onewith a newline\n")
    }

    @Test func statusLoadSkipsADamagedRecord() throws {
        let tmp = try TemporarySpool()
        let logs = LogLines()
        let store = FileLearnedStore(spool: tmp.spool, now: { 1_764_800_000 }, onDamaged: { d, aside in
            logs.logger.warning("learned TLS record damaged; set aside", metadata: ["domain": "\(d)", "file": "\(aside)"])
        })
        try store.put(Self.full())
        try tmp.spool.writeRecord("learned", "broken.example", Array("relayd-learned 1\ndomain broken.example\n".utf8))
        let status = LearnedStatus(store: store, settings: LearnedSettings(), logger: logs.logger, now: { 1_764_800_000 })
        status.load()
        #expect(status.domains == ["partner.example"])
        #expect(logs.count("learned TLS record damaged") == 1)
    }
}
