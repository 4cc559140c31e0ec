import Foundation
import XCTest
@testable import RelayCore

final class ConfigTests: XCTestCase {
    var dir: String = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "relayd-config-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// A minimal valid file; `extra` is appended, `replace` substitutes lines.
    func configText(_ extra: String = "", replacing: [String: String] = [:]) -> String {
        var text = """
        [server]
        hostname = "relay.example.test"
        spool_dir = "spool"

        [[listener]]
        address = "127.0.0.1:2525"
        kind = "smtp"

        [[listener]]
        address = "127.0.0.1:2587"
        kind = "submission"

        [tls]
        certificate = "\(Fixtures.path("mx.pem"))"
        key = "\(Fixtures.path("mx.key"))"
        min_version = "TLSv1.2"

        [outbound]
        default_level = "opportunistic"

        [limits]
        max_message_size = 1000000

        """
        for (from, to) in replacing {
            precondition(text.contains(from), "fixture does not contain \(from)")
            text = text.replacingOccurrences(of: from, with: to)
        }
        return text + extra
    }

    func load(_ text: String) throws -> Config {
        let path = dir + "/relayd.conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try ConfigLoader.load(path: path)
    }

    func errors(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> [ConfigError] {
        do {
            _ = try load(text)
            XCTFail("config was accepted", file: file, line: line)
            return []
        } catch let e as ConfigErrors {
            return e.errors
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
            return []
        }
    }

    // MARK: valid files

    func testMinimalConfigLoadsWithDefaults() throws {
        let c = try load(configText())
        XCTAssertEqual(c.server.hostname, "relay.example.test")
        XCTAssertEqual(c.server.spoolDirectory, dir + "/spool", "relative paths resolve against the config's folder")
        XCTAssertNil(c.server.usersFile)
        XCTAssertEqual(c.listeners.count, 2)
        XCTAssertEqual(c.listeners[1].kind, .submission)
        XCTAssertTrue(c.listeners[1].requireTLS)
        XCTAssertTrue(c.listeners[1].requireAuth)
        XCTAssertFalse(c.listeners[0].requireTLS)
        XCTAssertEqual(c.tls.minimumVersion, .tls1_2)
        XCTAssertEqual(c.outbound.defaultLevel, .opportunistic)
        XCTAssertEqual(c.queue.maxLifetime, 5 * 86400)
        XCTAssertEqual(c.limits.maxMessageSize, 1_000_000)
        XCTAssertEqual(c.limits.maxRecipients, 1000)
        XCTAssertEqual(c.log.level, .info)
    }

    func testPerDomainLevelsAndTables() throws {
        let c = try load(configText("""
            [outbound.domains]
            "Bank.Example" = "verify"
            ".partner.example" = "forced"
            "portal.example" = { level = "tls-exclusive", strength = "forced" }
            "vault.example" = { level = "tls-exclusive" }

            [queue]
            retry_schedule = ["30s", 60, "2m"]
            max_lifetime = "2h"

            [dns]
            servers = ["127.0.0.53", "127.0.0.1:5353", "[::1]:53"]

            [relay]
            client_networks = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
            domains = ["example.org"]
            """))
        XCTAssertEqual(c.outbound.domains["bank.example"], DomainPolicy(level: .verify))
        XCTAssertEqual(c.outbound.domains[".partner.example"]?.level, .forced)
        XCTAssertEqual(c.outbound.domains["portal.example"], DomainPolicy(level: .tlsExclusive, exclusiveStrength: .forced))
        XCTAssertEqual(c.outbound.domains["vault.example"]?.exclusiveStrength, .verify, "tls-exclusive defaults to verify strength")
        XCTAssertEqual(c.queue.retrySchedule, [30, 60, 120])
        XCTAssertEqual(c.queue.maxLifetime, 7200)
        XCTAssertEqual(c.dns.servers.map(\.description), ["127.0.0.53:53", "127.0.0.1:5353", "[::1]:53"])
        XCTAssertTrue(c.relay.clientNetworks[0].contains(IPAddress("10.1.2.3")!))
        XCTAssertTrue(c.relay.clientNetworks[2].contains(IPAddress("192.0.2.7")!))
        XCTAssertFalse(c.relay.clientNetworks[2].contains(IPAddress("192.0.2.8")!))
    }

    func testExampleConfigIsValid() throws {
        // Lay out the example next to stand-ins for what `make run` creates.
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let example = try String(contentsOf: repo.appendingPathComponent("config/relayd.conf.example"), encoding: .utf8)
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/config", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: dir + "/run/tls", withIntermediateDirectories: true)
        try fm.copyItem(atPath: Fixtures.path("mx.pem"), toPath: dir + "/run/tls/cert.pem")
        try fm.copyItem(atPath: Fixtures.path("mx.key"), toPath: dir + "/run/tls/key.pem")
        try "".write(toFile: dir + "/run/users", atomically: true, encoding: .utf8)
        try example.write(toFile: dir + "/config/relayd.conf", atomically: true, encoding: .utf8)
        let c = try ConfigLoader.load(path: dir + "/config/relayd.conf")
        XCTAssertEqual(c.listeners.map(\.address.description), ["127.0.0.1:2525", "127.0.0.1:2587", "127.0.0.1:2465"])
        XCTAssertEqual(c.listeners.map(\.kind), [.smtp, .submission, .smtps])
    }

    // MARK: each error names the line and the key

    func testUnknownKeyNamesLineAndKey() {
        let errs = errors(configText(replacing: ["spool_dir = \"spool\"": "spool_dir = \"spool\"\nspool_drectory = \"x\""]))
        XCTAssertEqual(errs.count, 1, "\(errs)")
        XCTAssertEqual(errs.first?.key, "server.spool_drectory")
        XCTAssertEqual(errs.first?.line, 4)
        XCTAssertTrue(errs.first?.message.contains("unknown key") ?? false)
        XCTAssertTrue(errs.first?.description.hasSuffix("relayd.conf:4: server.spool_drectory: " + (errs.first?.message ?? "")) ?? false,
                      errs.first?.description ?? "")
    }

    func testUnknownSectionIsAnError() {
        let errs = errors(configText("\n[tsl]\nmin_version = \"TLSv1.3\"\n"))
        XCTAssertEqual(errs.map(\.key), ["tsl"])
        XCTAssertNotNil(errs.first?.line)
    }

    func testBadLevelNameNamesLineAndKey() {
        let errs = errors(configText(replacing: ["default_level = \"opportunistic\"": "default_level = \"secure\""]))
        XCTAssertEqual(errs.count, 1, "\(errs)")
        XCTAssertEqual(errs.first?.key, "outbound.default_level")
        XCTAssertEqual(errs.first?.line, 19)
        XCTAssertTrue(errs.first?.message.contains("'secure'") ?? false)
        XCTAssertTrue(errs.first?.message.contains("tls-exclusive") ?? false)
    }

    func testBadLevelInDomainTable() {
        let errs = errors(configText("\n[outbound.domains]\n\"bank.example\" = \"encrypted\"\n"))
        XCTAssertEqual(errs.first?.key, "outbound.domains.\"bank.example\"")
        XCTAssertEqual(errs.first?.line, 25)
    }

    func testStringWhereNumberBelongs() {
        let errs = errors(configText(replacing: ["max_message_size = 1000000": "max_message_size = \"10MB\""]))
        XCTAssertEqual(errs.count, 1, "\(errs)")
        XCTAssertEqual(errs.first?.key, "limits.max_message_size")
        XCTAssertEqual(errs.first?.line, 22)
        XCTAssertEqual(errs.first?.message, "expected an integer, found a string")
    }

    func testMissingCertificateFile() {
        let errs = errors(configText(replacing: [Fixtures.path("mx.pem"): "/nonexistent/relayd/cert.pem"]))
        XCTAssertEqual(errs.count, 1, "\(errs)")
        XCTAssertEqual(errs.first?.key, "tls.certificate")
        XCTAssertEqual(errs.first?.line, 14)
        XCTAssertTrue(errs.first?.message.contains("/nonexistent/relayd/cert.pem") ?? false)
    }

    func testKeyThatDoesNotMatchCertificate() {
        let errs = errors(configText(replacing: [Fixtures.path("mx.key"): Fixtures.path("selfsigned.key")]))
        XCTAssertEqual(errs.first?.key, "tls.certificate")
        XCTAssertTrue(errs.first?.message.contains("mismatch") ?? false, "\(errs)")
    }

    func testFloorBelowTLS10IsRefused() {
        let errs = errors(configText(replacing: ["min_version = \"TLSv1.2\"": "min_version = \"SSLv3\""]))
        XCTAssertEqual(errs.first?.key, "tls.min_version")
        XCTAssertEqual(errs.first?.line, 16)
    }

    func testSubmissionWithoutTLSIsRefused() {
        let errs = errors(configText(replacing: ["kind = \"submission\"": "kind = \"submission\"\nrequire_tls = false"]))
        XCTAssertEqual(errs.first?.key, "listener[1].require_tls")
        XCTAssertEqual(errs.first?.line, 12)
    }

    func testUnreadableUsersFile() {
        let errs = errors(configText(replacing: ["spool_dir = \"spool\"": "spool_dir = \"spool\"\nusers_file = \"missing-users\""]))
        XCTAssertEqual(errs.first?.key, "server.users_file")
        XCTAssertTrue(errs.first?.message.contains("missing-users") ?? false)
    }

    func testAllErrorsAreReportedNotOnlyTheFirst() {
        let errs = errors(configText(replacing: [
            "default_level = \"opportunistic\"": "default_level = \"secure\"",
            "max_message_size = 1000000": "max_message_size = \"big\"",
            Fixtures.path("mx.pem"): "/nonexistent/cert.pem",
            "hostname = \"relay.example.test\"": "hostname = \"relay.example.test\"\ncolour = \"blue\"",
        ]))
        XCTAssertEqual(Set(errs.compactMap(\.key)),
                       ["outbound.default_level", "limits.max_message_size", "tls.certificate", "server.colour"])
    }

    func testTOMLSyntaxErrorHasLine() {
        let errs = errors(configText(replacing: ["kind = \"smtp\"": "kind = smtp"]))
        XCTAssertEqual(errs.count, 1)
        XCTAssertEqual(errs.first?.line, 7)
        XCTAssertNil(errs.first?.key)
    }

    func testBadListenerAddressAndKind() {
        let errs = errors(configText(replacing: ["address = \"127.0.0.1:2525\"": "address = \"mail.example:99999\"",
                                                 "kind = \"submission\"": "kind = \"lmtp\""]))
        XCTAssertEqual(Set(errs.compactMap(\.key)), ["listener[0].address", "listener[1].kind"])
    }

    func testBadDurationsAndNetworks() {
        let errs = errors(configText("""
            [queue]
            retry_schedule = ["5 minutes"]
            max_lifetime = -3
            [relay]
            client_networks = ["10.0.0.0/33", "everyone"]
            [dns]
            servers = ["dns.example"]
            """))
        XCTAssertEqual(errs.compactMap(\.key).sorted(),
                       ["dns.servers", "queue.max_lifetime", "queue.retry_schedule", "relay.client_networks", "relay.client_networks"])
    }

    func testDurationParsing() {
        XCTAssertEqual(ConfigLoader.parseDuration("30s"), 30)
        XCTAssertEqual(ConfigLoader.parseDuration("5m"), 300)
        XCTAssertEqual(ConfigLoader.parseDuration("4h"), 14400)
        XCTAssertEqual(ConfigLoader.parseDuration("5d"), 432000)
        XCTAssertEqual(ConfigLoader.parseDuration("90"), 90)
        XCTAssertNil(ConfigLoader.parseDuration("m"))
        XCTAssertNil(ConfigLoader.parseDuration("-5m"))
        XCTAssertNil(ConfigLoader.parseDuration("5w"))
        XCTAssertNil(ConfigLoader.parseDuration("99999999999999999999d"))
    }

    func testKeyLocatorHandlesArraysMultilineAndQuotedKeys() {
        let src = """
        # comment = not a key
        [a]
        x = 1
        list = [
          "y = 2",
        ]
        text = \"\"\"
        z = 3
        \"\"\"
        [[l]]
        k = 1
        [[l]]
        k = 2
        [b.c]
        "d.e" = 4
        """
        let loc = TOMLKeyLocator(source: src)
        XCTAssertEqual(loc.line(for: "a.x"), 3)
        XCTAssertEqual(loc.line(for: "a.list"), 4)
        XCTAssertEqual(loc.line(for: "a.text"), 7)
        XCTAssertEqual(loc.line(for: "a.y"), 2, "inside an array value is not a key; falls back to [a]")
        XCTAssertEqual(loc.line(for: "a.z"), 2, "inside a multi-line string is not a key")
        XCTAssertEqual(loc.line(for: "l[0].k"), 11)
        XCTAssertEqual(loc.line(for: "l[1].k"), 13)
        XCTAssertEqual(loc.line(for: "l[1].missing"), 12)
        XCTAssertEqual(loc.line(for: "b.c.\"d.e\""), 15)
        XCTAssertNil(loc.line(for: "nowhere"))
    }
}
