import Foundation
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayLog
@testable import RelayAuth
@testable import RelayQueue
@testable import RelayCore
import RelayTestSupport

/// A class so that deinit removes each test's spool folder.
@Suite final class SpoolTests {
    let dir = NSTemporaryDirectory() + "relayd-spool-\(UUID().uuidString)"

    deinit { try? FileManager.default.removeItem(atPath: dir) }

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

    @Test func queueFileRoundTrip() throws {
        let m = sampleMessage()
        #expect(try QueueFile.decode(QueueFile.encode(m)) == m)
        var nullSender = m
        nullSender.envelope.sender = .null
        #expect(try QueueFile.decode(QueueFile.encode(nullSender)) == nullSender)
    }

    /// The TLS-RPT flag: written only when set, so files from before it
    /// (which never carry the record) read back as "not a report".
    @Test func tlsReportFlagRoundTripsAndOldFilesReadUnflagged() throws {
        var m = sampleMessage()
        #expect(!String(decoding: QueueFile.encode(m), as: UTF8.self).contains("tls-report"))
        #expect(try QueueFile.decode(QueueFile.encode(m)).envelope.tlsReport == false)
        m.envelope.tlsReport = true
        let bytes = QueueFile.encode(m)
        #expect(String(decoding: bytes, as: UTF8.self).contains("\ntls-report 1\n"))
        #expect(try QueueFile.decode(bytes) == m)
        // Anything but "1" is a damaged file, not a guess.
        var text = String(decoding: QueueFile.encodeHeader(m), as: UTF8.self).replacingOccurrences(of: "tls-report 1", with: "tls-report yes")
        text += String(decoding: m.body, as: UTF8.self)
        var bad = Array(text.utf8)
        bad += QueueFile.trailer(checksumOfHeaderAndBody: QueueFile.fnv1a64(bad[...]))
        #expect(throws: QueueFileError.badRecord("tls-report")) { try QueueFile.decode(bad) }
    }

    @Test func everyTruncationIsDetected() {
        let bytes = QueueFile.encode(sampleMessage())
        for cut in 0..<bytes.count {
            #expect(throws: (any Error).self, "prefix of \(cut) bytes was accepted") { try QueueFile.decode(Array(bytes[0..<cut])) }
        }
    }

    @Test func everySingleByteCorruptionIsDetected() {
        let bytes = QueueFile.encode(sampleMessage())
        for i in stride(from: 0, to: bytes.count, by: 3) {
            var bad = bytes
            bad[i] ^= 0x20
            #expect(throws: (any Error).self, "flip at \(i) was accepted") { try QueueFile.decode(bad) }
        }
    }

    @Test func storeIsReadableAndRecoveryQuarantinesBadFiles() throws {
        let spool = try Spool(root: dir, reserveBytes: 0)
        let good = sampleMessage()
        try spool.store(good)
        #expect(spool.list(.incoming) == [good.id])
        #expect(try spool.read(.incoming, good.id) == good)
        #expect(spool.list(.tmp).isEmpty, "tmp/ is empty after a store")

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
        #expect(report.discardedPartial == ["1M1DQ2338CQJ7J8X"])
        #expect(Set(report.quarantined.map(\.id)) == [truncatedID, "notanid"])
        #expect(report.intact == 2)
        #expect(Set(spool.list(.incoming)) == [good.id, active.id], "active work returns to incoming")
        #expect(Set(spool.list(.corrupt)) == [truncatedID, "notanid"])
        #expect(spool.list(.tmp).isEmpty)
    }

    @Test func reserveRefusesWithInsufficientSpace() throws {
        let spool = try Spool(root: dir, reserveBytes: UInt64.max)
        let error = #expect(throws: Spool.StoreError.self) { try spool.store(sampleMessage()) }
        if case .insufficientSpace? = error {} else { Issue.record("\(String(describing: error))") }
        #expect(spool.list(.incoming).isEmpty)
        #expect(spool.list(.tmp).isEmpty)
    }

    @Test func storeFailureLeavesNothingBehind() throws {
        let spool = try Spool(root: dir, reserveBytes: 0)
        // Make incoming/ unusable: the rename must fail and tmp/ be cleaned.
        try FileManager.default.removeItem(atPath: spool.path(.incoming))
        #expect(throws: (any Error).self) { try spool.store(sampleMessage()) }
        #expect(spool.list(.tmp).isEmpty)
    }

    @Test(arguments: Spool.SyncMethod.allCases)
    func groupCommitStoresEveryMessageOfABatch(sync: Spool.SyncMethod) throws {
        let spool = try Spool(root: dir, reserveBytes: 0, syncMethod: sync)
        #expect(spool.syncMethod == sync)
        let batch = (0..<5).map { sampleMessage(id: QueueID.make(microseconds: UInt64(100 + $0), random: UInt32($0))) }
        let results = spool.store(batch: batch)
        #expect(results.filter { if case .success = $0 { return true } else { return false } }.count == 5)
        #expect(spool.list(.incoming) == batch.map(\.id).sorted())
        for m in batch { #expect(try spool.read(.incoming, m.id) == m) }
        #expect(spool.list(.tmp).isEmpty)
        // Recycled files under both methods: finish the batch, store another
        // through the pool, and it reads back exactly from the same inodes.
        _ = spool.recover()
        for m in batch {
            try spool.move(m.id, from: .incoming, to: .active, durable: false)
            try spool.remove(m.id, from: .active, durable: false)
        }
        #expect(spool.list(.free).count == 5)
        let again = (0..<5).map { sampleMessage(id: QueueID.make(microseconds: UInt64(200 + $0), random: UInt32($0))) }
        for r in spool.store(batch: again) { try r.get() }
        #expect(spool.list(.free).isEmpty, "every file of the second batch came from the pool")
        for m in again { #expect(try spool.read(.incoming, m.id) == m) }
        let full = try Spool(root: dir + "-full", reserveBytes: UInt64.max, syncMethod: sync)
        defer { try? FileManager.default.removeItem(atPath: dir + "-full") }
        for r in full.store(batch: batch) {
            guard case .failure(.insufficientSpace) = r else {
                Issue.record("\(r)")
                return
            }
        }
        #expect(full.list(.incoming).isEmpty)
    }

    @Test func queueIDsAreValidOrderedAndUnique() {
        let a = QueueID.make(microseconds: 1, random: 0)
        let b = QueueID.make(microseconds: 2, random: 0)
        #expect(a < b)
        #expect(QueueID.isValid(QueueID.generate()))
        #expect(!QueueID.isValid("../../etc/passwd"))
        #expect(Set((0..<1000).map { _ in QueueID.generate() }).count == 1000)
    }
}

@Suite struct AuthTests {
    @Test func usersFileParsing() {
        let (users, problems) = UsersFile.parse("""
        # comment
        alice:$y$j9T$rAnAJr88TAbEvqeAPFErf.$fFLLtkv/Ms1GwKtMYtdL78qmZ2wHwzdmmXfo56k1XQB
        bob:$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1:19000:0::::
        weak:$1$salt$qJH7.N4xYta3aEG/dfqo/0
        des:abJnggxhB/yWI
        nocolon
        alice:$6$x$y
        """)
        #expect(Set(users.hashes.keys) == ["alice", "bob"])
        #expect(problems.map(\.line) == [4, 5, 6, 7])
        #expect(problems[0].message.contains("weak"))
    }

    @Test func yescryptAndSHA512CryptVerify() {
        let yescrypt = "$y$j9T$rAnAJr88TAbEvqeAPFErf.$fFLLtkv/Ms1GwKtMYtdL78qmZ2wHwzdmmXfo56k1XQB"
        let sha512 = "$6$abc$IdWKNKTJEb8LxY7CGg8YBXlvtfZzFw7Mp/r6niK9YB2mdvgY..TKjv1T..8RadRt2qvUHYRLr/TsVArtr91iR1"
        #expect(PasswordVerifier.verify(password: Array("secret".utf8), hash: yescrypt))
        #expect(PasswordVerifier.verify(password: Array("secret".utf8), hash: sha512))
        #expect(!PasswordVerifier.verify(password: Array("Secret".utf8), hash: yescrypt))
        #expect(!(PasswordVerifier(users: UsersFile.parse("bob:\(sha512)").0)
            .verify(username: "alice", password: Array("secret".utf8))), "unknown user")
        #expect(!PasswordVerifier.verify(password: Array("secret\0x".utf8), hash: sha512), "embedded NUL")
        #expect(!PasswordVerifier.verify(password: Array("secret".utf8), hash: "$6$abc$garbage"))
    }

    @Test func throttleSlowsAndBlocksPerIP() {
        let t = AuthThrottle(maxFailures: 3, windowSeconds: 100)
        let ip = IPAddress("192.0.2.9")!
        #expect(t.delay(for: ip, now: 0) == 0)
        t.recordFailure(ip, now: 1)
        t.recordFailure(ip, now: 2)
        #expect(t.delay(for: ip, now: 3) == 2)
        #expect(!t.isBlocked(ip, now: 3))
        t.recordFailure(ip, now: 3)
        #expect(t.isBlocked(ip, now: 4))
        #expect(!t.isBlocked(IPAddress("192.0.2.10")!, now: 4), "other addresses unaffected")
        #expect(!t.isBlocked(ip, now: 104), "window expires")
    }
}

@Suite struct ParserTests {
    @Test func mailboxGrammar() {
        let ok = ["<a@b.test>", "<\"a b\"@b.test>", "<a.b+c@sub.b.test>", "<@r1.test,@r2.test:a@b.test>",
                  "<a@[192.0.2.1]>", "<a@[IPv6:2001:db8::1]>", "<ü@bücher.test>", "<\"a\\\"b\"@b.test>"]
        for p in ok { #expect(Mailbox.parseForwardPath(p) != nil, "\(p)") }
        let bad = ["a@b.test", "<a@b.test", "<>", "<a@>", "<@b.test>", "<a..b@b.test>", "<.a@b.test>", "<a.@b.test>",
                   "<a@b..test>", "<a@-b.test>", "<a@b.test.>", "<a b@b.test>", "<a@[300.1.1.1]>", "<a@[1.2.3]>",
                   "<a\"b\"@b.test>", "<\"a@b.test>", "<a@b_c.test>", "<" + String(repeating: "a", count: 65) + "@b.test>",
                   "<@bad_route:a@b.test>", "<a@b.test>>"]
        for p in bad { #expect(Mailbox.parseForwardPath(p) == nil, "\(p)") }
        #expect(Mailbox.parseForwardPath("<A@B.Test>")?.description == "A@b.test", "domain folded, local part kept")
        #expect(Mailbox.parseForwardPath("<\"x@y\"@b.test>")?.domain == "b.test")
        #expect(Mailbox.parseForwardPath("<\"x@y\"@b.test>")!.localPartHasRouting)
    }

    @Test func dataReaderUnstuffsAndFindsOnlyTheRealEnd() {
        var r = DataReader(maxSize: 1000)
        let input = Array("a\r\n..b\r\n.\r\nNEXT".utf8)
        let (consumed, outcome) = r.consume(input[...])
        #expect(outcome == .complete(body: Array("a\r\n.b\r\n".utf8)))
        #expect(consumed == input.count - 4, "pipelined bytes after the end stay unconsumed")
    }

    @Test func dotStufferRoundTrip() {
        for body in ["", "x\r\n", ".\r\n", "..\r\n.x\r\n", "no final newline", "a\r\n.\r\nb\r\n"] {
            let encoded = DotStuffer.encode(Array(body.utf8))
            var r = DataReader(maxSize: 10_000)
            let (_, outcome) = r.consume(encoded[...])
            var expected = Array(body.utf8)
            if !expected.isEmpty && expected.last != 10 { expected += [13, 10] }
            #expect(outcome == .complete(body: expected), "\(body.debugDescription)")
        }
    }

    @Test func base64IsStrict() {
        #expect(SASL.decodeBase64("AGFsaWNlAHNlY3JldA==") == Array("\0alice\0secret".utf8))
        #expect(SASL.decodeBase64("") == [])
        for bad in ["A", "AB=C", "A===", "AB C", "AB\u{0}=", "====", "QUJD=", "QQ==QQ=="] {
            #expect(SASL.decodeBase64(bad) == nil, "\(bad)")
        }
        for s in ["", "a", "ab", "abc", "abcd", "\0\u{ff}"] {
            #expect(SASL.decodeBase64(SASL.encodeBase64(Array(s.utf8))) == Array(s.utf8))
        }
    }

    @Test func xtextAndNetworks() {
        #expect(XText.decode("a+2Bb+3Dc") == "a+b=c")
        #expect(XText.decode("a+2") == nil)
        #expect(XText.decode("a+zz") == nil)
        #expect(XText.decode("a b") == nil)
        #expect(XText.decode(XText.encode("x+y=z é")) == "x+y=z é")
        let v4 = IPNetwork("10.1.0.0/16")!
        #expect(v4.contains(IPAddress("10.1.255.1")!))
        #expect(v4.contains(IPAddress("::ffff:10.1.2.3")!), "v4-mapped v6 clients match v4 networks")
        #expect(!v4.contains(IPAddress("10.2.0.1")!))
        #expect(!v4.contains(IPAddress("2001:db8::1")!))
        #expect(IPNetwork("2001:db8::/33")!.contains(IPAddress("2001:db8:7fff::1")!))
        #expect(!IPNetwork("2001:db8::/33")!.contains(IPAddress("2001:db8:8000::1")!))
        #expect(IPNetwork("10.0.0.0/+8") == nil)
        #expect(IPNetwork("10.0.0.0/8/8") == nil)
        #expect(IPNetwork("0.0.0.0/0")!.contains(IPAddress("203.0.113.5")!))
    }

    @Test func domainTableLookupKeys() {
        #expect(DNSName.lookupKeys("mail.bank.example") == ["mail.bank.example", ".bank.example", ".example"])
        #expect(DNSName.lookupKeys("localhost") == ["localhost"])
    }

    @Test func receivedHeader() {
        var env = Envelope(sender: .null, origin: Envelope.Origin(clientAddress: "2001:db8::5", heloName: "c.test", esmtp: true,
                                                                  authenticatedUser: "alice", tlsVersion: "TLSv1.3",
                                                                  tlsCipher: "TLS_AES_128_GCM_SHA256", tlsBits: 128))
        env.recipients = [Envelope.Recipient(mailbox: Mailbox.parseForwardPath("<u@example.org>")!)]
        let h = ReceivedHeader.make(envelope: env, queueID: "1M1DQ2338CQJ7J89", hostname: "relay.test", includeUser: false, unixTime: 0)
        #expect(h == "Received: from c.test ([IPv6:2001:db8::5])\r\n\tby relay.test (relayd) with ESMTPSA id 1M1DQ2338CQJ7J89\r\n"
                + "\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128 bits))\r\n\tfor <u@example.org>; Thu, 01 Jan 1970 00:00:00 +0000\r\n")
        #expect(ReceivedHeader.make(envelope: env, queueID: "X", hostname: "r", includeUser: true, unixTime: 0)
            .contains("(authenticated as alice)"))
    }

    @Test func logValuesCannotForgeLines() {
        #expect(LogfmtHandler.quote("plain") == "plain")
        #expect(LogfmtHandler.quote("two words") == "\"two words\"")
        #expect(LogfmtHandler.quote("evil\nlevel=error msg=forged") == "\"evil\\nlevel=error msg=forged\"")
        #expect(LogfmtHandler.quote("") == "\"\"")
    }
}
