import Foundation
import XCTest
@testable import RelayCore

final class SpoolTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "relayd-spool-\(UUID().uuidString)"
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func sampleMessage(id: String = QueueID.make(microseconds: 1_700_000_000_000_000, random: 7)) -> QueuedMessage {
        var env = Envelope(sender: .mailbox(Mailbox.parseForwardPath("<a@b.test>")!),
                           origin: Envelope.Origin(clientAddress: "192.0.2.1", heloName: "client.test", esmtp: true,
                                                   authenticatedUser: "alice", tlsVersion: "TLSv1.3",
                                                   tlsCipher: "TLS_AES_256_GCM_SHA384", tlsBits: 256))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@example.org>")!, notify: [.success, .failure],
                                             originalRecipient: "rfc822;U@example.org"),
                          Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<\"odd user\"@example.net>")!)]
        env.ret = .headers
        env.envelopeID = "env id+1"
        env.bodyType = .eightBitMIME
        return QueuedMessage(id: id, arrival: 1_700_000_000, envelope: env,
                             body: Array("Subject: x\r\n\r\nbinary \u{00e9} \0 body\r\nend\r\n".utf8))
    }

    func testQueueFileRoundTrip() throws {
        let m = sampleMessage()
        XCTAssertEqual(try QueueFile.decode(QueueFile.encode(m)), m)
        var nullSender = m
        nullSender.envelope.sender = .null
        XCTAssertEqual(try QueueFile.decode(QueueFile.encode(nullSender)), nullSender)
    }

    func testEveryTruncationIsDetected() {
        let bytes = QueueFile.encode(sampleMessage())
        for cut in 0..<bytes.count {
            XCTAssertThrowsError(try QueueFile.decode(Array(bytes[0..<cut])), "prefix of \(cut) bytes was accepted")
        }
    }

    func testEverySingleByteCorruptionIsDetected() {
        let bytes = QueueFile.encode(sampleMessage())
        for i in stride(from: 0, to: bytes.count, by: 3) {
            var bad = bytes
            bad[i] ^= 0x20
            XCTAssertThrowsError(try QueueFile.decode(bad), "flip at \(i) was accepted")
        }
    }

    func testStoreIsReadableAndRecoveryQuarantinesBadFiles() throws {
        let spool = try Spool(root: dir, reserveBytes: 0)
        let good = sampleMessage()
        try spool.store(good)
        XCTAssertEqual(spool.list(.incoming), [good.id])
        XCTAssertEqual(try spool.read(.incoming, good.id), good)
        XCTAssertTrue(spool.list(.tmp).isEmpty, "tmp/ is empty after a store")

        // A torn write left in tmp/, a truncated file in incoming/, garbage
        // with a queue-id name, and a stray file.
        try Data("partial".utf8).write(to: URL(fileURLWithPath: spool.path(.tmp, "1M1DQ2338CQJ7J8X")))
        let truncatedID = QueueID.make(microseconds: 1_700_000_000_000_001, random: 9)
        var truncated = sampleMessage(id: truncatedID)
        truncated.body = Array("x\r\n".utf8)
        let tbytes = QueueFile.encode(truncated)
        try Data(tbytes[0..<(tbytes.count - 10)]).write(to: URL(fileURLWithPath: spool.path(.incoming, truncatedID)))
        try Data("hello".utf8).write(to: URL(fileURLWithPath: spool.path(.deferred, "notanid")))
        // A message that was being delivered at the crash.
        let active = sampleMessage(id: QueueID.make(microseconds: 1_700_000_000_000_002, random: 1))
        try spool.store(active)
        try spool.move(active.id, from: .incoming, to: .active)

        let report = spool.recover()
        XCTAssertEqual(report.discardedPartial, ["1M1DQ2338CQJ7J8X"])
        XCTAssertEqual(Set(report.quarantined.map(\.id)), [truncatedID, "notanid"])
        XCTAssertEqual(report.intact, 2)
        XCTAssertEqual(Set(spool.list(.incoming)), [good.id, active.id], "active work returns to incoming")
        XCTAssertEqual(Set(spool.list(.corrupt)), [truncatedID, "notanid"])
        XCTAssertTrue(spool.list(.tmp).isEmpty)
    }

    func testReserveRefusesWithInsufficientSpace() throws {
        let spool = try Spool(root: dir, reserveBytes: UInt64.max)
        XCTAssertThrowsError(try spool.store(sampleMessage())) { error in
            guard case Spool.StoreError.insufficientSpace = error else { return XCTFail("\(error)") }
        }
        XCTAssertTrue(spool.list(.incoming).isEmpty)
        XCTAssertTrue(spool.list(.tmp).isEmpty)
    }

    func testStoreFailureLeavesNothingBehind() throws {
        let spool = try Spool(root: dir, reserveBytes: 0)
        // Make incoming/ unusable: the rename must fail and tmp/ be cleaned.
        try FileManager.default.removeItem(atPath: spool.path(.incoming))
        XCTAssertThrowsError(try spool.store(sampleMessage()))
        XCTAssertTrue(spool.list(.tmp).isEmpty)
    }

    func testGroupCommitStoresEveryMessageOfABatch() throws {
        let spool = try Spool(root: dir, reserveBytes: 0)
        let batch = (0..<5).map { sampleMessage(id: QueueID.make(microseconds: UInt64(100 + $0), random: UInt32($0))) }
        let results = spool.store(batch: batch)
        XCTAssertEqual(results.filter { if case .success = $0 { return true } else { return false } }.count, 5)
        XCTAssertEqual(spool.list(.incoming), batch.map(\.id).sorted())
        for m in batch { XCTAssertEqual(try spool.read(.incoming, m.id), m) }
        XCTAssertTrue(spool.list(.tmp).isEmpty)
        let full = try Spool(root: dir + "-full", reserveBytes: UInt64.max)
        defer { try? FileManager.default.removeItem(atPath: dir + "-full") }
        for r in full.store(batch: batch) {
            guard case .failure(.insufficientSpace) = r else { return XCTFail("\(r)") }
        }
        XCTAssertTrue(full.list(.incoming).isEmpty)
    }

    func testQueueIDsAreValidOrderedAndUnique() {
        let a = QueueID.make(microseconds: 1, random: 0)
        let b = QueueID.make(microseconds: 2, random: 0)
        XCTAssertLessThan(a, b)
        XCTAssertTrue(QueueID.isValid(QueueID.generate()))
        XCTAssertFalse(QueueID.isValid("../../etc/passwd"))
        XCTAssertEqual(Set((0..<1000).map { _ in QueueID.generate() }).count, 1000)
    }
}

final class AuthTests: XCTestCase {
    func testUsersFileParsing() {
        let (users, problems) = UsersFile.parse("""
        # comment
        alice:$y$j9T$rAnAJr88TAbEvqeAPFErf.$fFLLtkv/Ms1GwKtMYtdL78qmZ2wHwzdmmXfo56k1XQB
        bob:$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1:19000:0::::
        weak:$1$salt$qJH7.N4xYta3aEG/dfqo/0
        des:abJnggxhB/yWI
        nocolon
        alice:$6$x$y
        """)
        XCTAssertEqual(Set(users.hashes.keys), ["alice", "bob"])
        XCTAssertEqual(problems.map(\.line), [4, 5, 6, 7])
        XCTAssertTrue(problems[0].message.contains("weak"))
    }

    func testYescryptAndSHA512CryptVerify() {
        let yescrypt = "$y$j9T$rAnAJr88TAbEvqeAPFErf.$fFLLtkv/Ms1GwKtMYtdL78qmZ2wHwzdmmXfo56k1XQB"
        let sha512 = "$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1"
        XCTAssertTrue(PasswordVerifier.verify(password: Array("secret".utf8), hash: yescrypt))
        XCTAssertTrue(PasswordVerifier.verify(password: Array("secret".utf8), hash: sha512))
        XCTAssertFalse(PasswordVerifier.verify(password: Array("Secret".utf8), hash: yescrypt))
        XCTAssertFalse(PasswordVerifier(users: UsersFile.parse("bob:\(sha512)").0)
            .verify(username: "alice", password: Array("secret".utf8)), "unknown user")
        XCTAssertFalse(PasswordVerifier.verify(password: Array("secret\0x".utf8), hash: sha512), "embedded NUL")
        XCTAssertFalse(PasswordVerifier.verify(password: Array("secret".utf8), hash: "$6$abc$garbage"))
    }

    func testThrottleSlowsAndBlocksPerIP() {
        let t = AuthThrottle(maxFailures: 3, windowSeconds: 100)
        let ip = IPAddress("192.0.2.9")!
        XCTAssertEqual(t.delay(for: ip, now: 0), 0)
        t.recordFailure(ip, now: 1)
        t.recordFailure(ip, now: 2)
        XCTAssertEqual(t.delay(for: ip, now: 3), 2)
        XCTAssertFalse(t.isBlocked(ip, now: 3))
        t.recordFailure(ip, now: 3)
        XCTAssertTrue(t.isBlocked(ip, now: 4))
        XCTAssertFalse(t.isBlocked(IPAddress("192.0.2.10")!, now: 4), "other addresses unaffected")
        XCTAssertFalse(t.isBlocked(ip, now: 104), "window expires")
    }
}

final class ParserTests: XCTestCase {
    func testMailboxGrammar() {
        let ok = ["<a@b.test>", "<\"a b\"@b.test>", "<a.b+c@sub.b.test>", "<@r1.test,@r2.test:a@b.test>",
                  "<a@[192.0.2.1]>", "<a@[IPv6:2001:db8::1]>", "<ü@bücher.test>", "<\"a\\\"b\"@b.test>"]
        for p in ok { XCTAssertNotNil(Mailbox.parseForwardPath(p), p) }
        let bad = ["a@b.test", "<a@b.test", "<>", "<a@>", "<@b.test>", "<a..b@b.test>", "<.a@b.test>", "<a.@b.test>",
                   "<a@b..test>", "<a@-b.test>", "<a@b.test.>", "<a b@b.test>", "<a@[300.1.1.1]>", "<a@[1.2.3]>",
                   "<a\"b\"@b.test>", "<\"a@b.test>", "<a@b_c.test>", "<" + String(repeating: "a", count: 65) + "@b.test>",
                   "<@bad_route:a@b.test>", "<a@b.test>>"]
        for p in bad { XCTAssertNil(Mailbox.parseForwardPath(p), p) }
        XCTAssertEqual(Mailbox.parseForwardPath("<A@B.Test>")?.description, "A@b.test", "domain folded, local part kept")
        XCTAssertEqual(Mailbox.parseForwardPath("<\"x@y\"@b.test>")?.domain, "b.test")
        XCTAssertTrue(Mailbox.parseForwardPath("<\"x@y\"@b.test>")!.localPartHasRouting)
    }

    func testDataReaderUnstuffsAndFindsOnlyTheRealEnd() {
        var r = DataReader(maxSize: 1000)
        let input = Array("a\r\n..b\r\n.\r\nNEXT".utf8)
        let (consumed, outcome) = r.consume(input[...])
        XCTAssertEqual(outcome, .complete(body: Array("a\r\n.b\r\n".utf8)))
        XCTAssertEqual(consumed, input.count - 4, "pipelined bytes after the end stay unconsumed")
    }

    func testDotStufferRoundTrip() {
        for body in ["", "x\r\n", ".\r\n", "..\r\n.x\r\n", "no final newline", "a\r\n.\r\nb\r\n"] {
            let encoded = DotStuffer.encode(Array(body.utf8))
            var r = DataReader(maxSize: 10_000)
            let (_, outcome) = r.consume(encoded[...])
            var expected = Array(body.utf8)
            if !expected.isEmpty && expected.last != 10 { expected += [13, 10] }
            XCTAssertEqual(outcome, .complete(body: expected), body.debugDescription)
        }
    }

    func testBase64IsStrict() {
        XCTAssertEqual(SASL.decodeBase64("AGFsaWNlAHNlY3JldA=="), Array("\0alice\0secret".utf8))
        XCTAssertEqual(SASL.decodeBase64(""), [])
        for bad in ["A", "AB=C", "A===", "AB C", "AB\u{0}=", "====", "QUJD=", "QQ==QQ=="] {
            XCTAssertNil(SASL.decodeBase64(bad), bad)
        }
        for s in ["", "a", "ab", "abc", "abcd", "\0\u{ff}"] {
            XCTAssertEqual(SASL.decodeBase64(SASL.encodeBase64(Array(s.utf8))), Array(s.utf8))
        }
    }

    func testXTextAndNetworks() {
        XCTAssertEqual(XText.decode("a+2Bb+3Dc"), "a+b=c")
        XCTAssertNil(XText.decode("a+2"))
        XCTAssertNil(XText.decode("a+zz"))
        XCTAssertNil(XText.decode("a b"))
        XCTAssertEqual(XText.decode(XText.encode("x+y=z é")), "x+y=z é")
        let v4 = IPNetwork("10.1.0.0/16")!
        XCTAssertTrue(v4.contains(IPAddress("10.1.255.1")!))
        XCTAssertTrue(v4.contains(IPAddress("::ffff:10.1.2.3")!), "v4-mapped v6 clients match v4 networks")
        XCTAssertFalse(v4.contains(IPAddress("10.2.0.1")!))
        XCTAssertFalse(v4.contains(IPAddress("2001:db8::1")!))
        XCTAssertTrue(IPNetwork("2001:db8::/33")!.contains(IPAddress("2001:db8:7fff::1")!))
        XCTAssertFalse(IPNetwork("2001:db8::/33")!.contains(IPAddress("2001:db8:8000::1")!))
        XCTAssertNil(IPNetwork("10.0.0.0/+8"))
        XCTAssertNil(IPNetwork("10.0.0.0/8/8"))
        XCTAssertTrue(IPNetwork("0.0.0.0/0")!.contains(IPAddress("203.0.113.5")!))
    }

    func testDomainTableLookupKeys() {
        XCTAssertEqual(DNSName.lookupKeys("mail.bank.example"), ["mail.bank.example", ".bank.example", ".example"])
        XCTAssertEqual(DNSName.lookupKeys("localhost"), ["localhost"])
    }

    func testReceivedHeader() {
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "2001:db8::5", heloName: "c.test", esmtp: true,
                                                                  authenticatedUser: "alice", tlsVersion: "TLSv1.3",
                                                                  tlsCipher: "TLS_AES_128_GCM_SHA256", tlsBits: 128))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@example.org>")!)]
        let h = ReceivedHeader.make(envelope: env, queueID: "1M1DQ2338CQJ7J89", hostname: "relay.test", includeUser: false, unixTime: 0)
        XCTAssertEqual(h, "Received: from c.test ([IPv6:2001:db8::5])\r\n\tby relay.test (relayd) with ESMTPSA id 1M1DQ2338CQJ7J89\r\n"
                       + "\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128 bits))\r\n\tfor <u@example.org>; Thu, 01 Jan 1970 00:00:00 +0000\r\n")
        XCTAssertTrue(ReceivedHeader.make(envelope: env, queueID: "X", hostname: "r", includeUser: true, unixTime: 0)
            .contains("(authenticated as alice)"))
    }

    func testLogValuesCannotForgeLines() {
        XCTAssertEqual(LogfmtHandler.quote("plain"), "plain")
        XCTAssertEqual(LogfmtHandler.quote("two words"), "\"two words\"")
        XCTAssertEqual(LogfmtHandler.quote("evil\nlevel=error msg=forged"), "\"evil\\nlevel=error msg=forged\"")
        XCTAssertEqual(LogfmtHandler.quote(""), "\"\"")
    }
}
