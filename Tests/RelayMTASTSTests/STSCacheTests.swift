// The MTA-STS cache store: records survive a round trip through the file
// form, a damaged or tampered record is set aside (never half-read), keys
// that are not domain names never reach the file system, and list/delete
// do what the CLI needs.
import Foundation
import Testing
@testable import RelayModel
@testable import RelayMTASTS
@testable import RelayQueue
@testable import RelaySTS
import RelayTestSupport

func policy(_ text: String) throws -> STSPolicy {
    switch STSPolicy.parse(Array(text.utf8)) {
    case .success(let p): return p
    case .failure(let e): throw e
    }
}

let enforcePolicy = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmx: *.backup.example.test\nmax_age: 86400\n"

final class DamagedLog: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return list }
}

@Suite struct STSCacheStoreTests {
    let t: TemporarySpool
    let damaged = DamagedLog()
    let store: FileSTSCacheStore

    init() throws {
        t = try TemporarySpool()
        let log = damaged
        store = FileSTSCacheStore(spool: t.spool, now: { 1_800_000_500 }, onDamaged: { log.add("\($0) \($1)") })
    }

    @Test func aRecordRoundTripsThroughItsFile() throws {
        var r = CachedSTSPolicy(domain: "example.test", id: "20261201T1", policy: try policy(enforcePolicy), fetched: 1_800_000_000)
        r.lastAttempt = 1_800_000_100
        r.lastResult = "timeout: no answer in 60 s; next\nline"
        try store.put(r)
        #expect(try store.get("example.test") == r)
        #expect(r.expires == 1_800_086_400)
        #expect(try store.list() == ["example.test"])
    }

    @Test func aCarriageReturnBeforeALineBreakIsDamageNotAJoinedLine() throws {
        var r = CachedSTSPolicy(domain: "example.test", id: "1", policy: try policy(enforcePolicy), fetched: 1_800_000_000)
        r.lastResult = "ok"
        var bytes = r.encoded()
        let i = try #require(bytes.firstIndex(of: 10))
        bytes.insert(13, at: i)
        #expect(throws: STSCacheError.self) { try CachedSTSPolicy.decode(bytes) }
        #expect(try CachedSTSPolicy.decode(r.encoded()) == r)
    }

    @Test func aMissingRecordIsNil() throws {
        #expect(try store.get("nothing.test") == nil)
        #expect(try store.delete("nothing.test") == false)
    }

    @Test func deleteForgetsTheRecord() throws {
        try store.put(CachedSTSPolicy(domain: "example.test", id: "1", policy: try policy(enforcePolicy), fetched: 0))
        #expect(try store.delete("example.test"))
        #expect(try store.get("example.test") == nil)
        #expect(try store.list().isEmpty)
    }

    struct Damage: CustomTestStringConvertible, Sendable {
        let name: String
        let edit: @Sendable ([UInt8]) -> [UInt8]
        var testDescription: String { name }
    }

    static let damages: [Damage] = [
        .init(name: "truncated", edit: { Array($0.prefix($0.count / 2)) }),
        .init(name: "a bit flipped in the policy", edit: { var b = $0; b[b.count / 2] ^= 0x04; return b }),
        .init(name: "empty", edit: { _ in [] }),
        .init(name: "check line only", edit: { Array($0.suffix(21)) }),
    ]

    @Test(arguments: damages)
    func aDamagedRecordIsSetAsideNotRead(_ d: Damage) throws {
        try store.put(CachedSTSPolicy(domain: "example.test", id: "1", policy: try policy(enforcePolicy), fetched: 0))
        let path = t.dir + "/mta-sts/example.test"
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        try Data(d.edit(bytes)).write(to: URL(fileURLWithPath: path))
        #expect(try store.get("example.test") == nil)
        #expect(damaged.all.count == 1)
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(FileManager.default.fileExists(atPath: path + ".damaged-1800000500"))
        #expect(try store.list().isEmpty, "a record set aside is not listed")
    }

    @Test func aSealedRecordForAnotherDomainIsRefused() throws {
        // A well-formed record copied under another name must not apply there.
        try store.put(CachedSTSPolicy(domain: "example.test", id: "1", policy: try policy(enforcePolicy), fetched: 0))
        let dir = t.dir + "/mta-sts/"
        try FileManager.default.copyItem(atPath: dir + "example.test", toPath: dir + "other.test")
        #expect(try store.get("other.test") == nil)
        #expect(damaged.all.count == 1)
    }

    @Test(arguments: ["", "../etc", "a/b.test", "example", ".example.test", "example.test.", "EXAMPLE.test",
                      "ex ample.test", String(repeating: "a", count: 64) + ".test"])
    func keysThatAreNotDomainNamesNeverReachTheDisk(_ key: String) throws {
        #expect(throws: STSCacheError.self) { try store.get(key) }
        #expect(throws: STSCacheError.self) { try store.delete(key) }
        let r = CachedSTSPolicy(domain: key, id: "1", policy: try policy(enforcePolicy), fetched: 0)
        #expect(throws: STSCacheError.self) { try store.put(r) }
    }
}
