import Foundation
import Testing
@testable import RelayModel
@testable import RelayPolicy
@testable import RelayTLS
@testable import RelayAuth
@testable import RelayDNS
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

/// A class: each test gets its own folder in init and deinit removes it.
@Suite final class ConfigTests {
    let dir = NSTemporaryDirectory() + "relayd-config-\(UUID().uuidString)"

    init() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

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

    func errors(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> [ConfigError] {
        do {
            _ = try load(text)
            Issue.record("config was accepted", sourceLocation: sourceLocation)
            return []
        } catch let e as ConfigErrors {
            return e.errors
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
            return []
        }
    }

    // MARK: valid files

    @Test func minimalConfigLoadsWithDefaults() throws {
        let c = try load(configText())
        #expect(c.server.hostname == "relay.example.test")
        #expect(c.server.spoolDirectory == dir + "/spool", "relative paths resolve against the config's folder")
        #expect(c.server.usersFile == nil)
        #expect(c.listeners.count == 2)
        #expect(c.listeners[1].kind == .submission)
        #expect(c.listeners[1].requireTLS)
        #expect(c.listeners[1].requireAuth)
        #expect(!c.listeners[0].requireTLS)
        #expect(c.tls.minimumVersion == .tls1_2)
        #expect(c.outbound.defaultLevel == .opportunistic)
        #expect(c.queue.maxLifetime == 5 * 86400)
        #expect(c.limits.maxMessageSize == 1_000_000)
        #expect(c.limits.maxRecipients == 1000)
        #expect(c.log.level == .info)
    }

    @Test func perDomainLevelsAndTables() throws {
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
        #expect(c.outbound.domains["bank.example"] == DomainPolicy(level: .verify))
        #expect(c.outbound.domains[".partner.example"]?.level == .forced)
        #expect(c.outbound.domains["portal.example"] == DomainPolicy(level: .tlsExclusive, exclusiveStrength: .forced))
        #expect(c.outbound.domains["vault.example"]?.exclusiveStrength == .verify, "tls-exclusive defaults to verify strength")
        #expect(c.queue.retrySchedule == [30, 60, 120])
        #expect(c.queue.maxLifetime == 7200)
        #expect(c.dns.servers.map(\.description) == ["127.0.0.53:53", "127.0.0.1:5353", "[::1]:53"])
        #expect(c.relay.clientNetworks[0].contains(IPAddress("10.1.2.3")!))
        #expect(c.relay.clientNetworks[2].contains(IPAddress("192.0.2.7")!))
        #expect(!c.relay.clientNetworks[2].contains(IPAddress("192.0.2.8")!))
    }

    @Test func exampleConfigIsValid() throws {
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
        #expect(c.listeners.map(\.address.description) == ["127.0.0.1:2525", "127.0.0.1:2587", "127.0.0.1:2465"])
        #expect(c.listeners.map(\.kind) == [.smtp, .submission, .smtps])
    }

    // MARK: each error names the line and the key

    @Test func unknownKeyNamesLineAndKey() {
        let errs = errors(configText(replacing: ["spool_dir = \"spool\"": "spool_dir = \"spool\"\nspool_drectory = \"x\""]))
        #expect(errs.count == 1, "\(errs)")
        #expect(errs.first?.key == "server.spool_drectory")
        #expect(errs.first?.line == 4)
        #expect(errs.first?.message.contains("unknown key") == true)
        #expect(errs.first?.description.hasSuffix("relayd.conf:4: server.spool_drectory: " + (errs.first?.message ?? "")) == true,
                "\(errs.first?.description ?? "")")
    }

    @Test func unknownSectionIsAnError() {
        let errs = errors(configText("\n[tsl]\nmin_version = \"TLSv1.3\"\n"))
        #expect(errs.map(\.key) == ["tsl"])
        #expect(errs.first?.line != nil)
    }

    @Test func badLevelNameNamesLineAndKey() {
        let errs = errors(configText(replacing: ["default_level = \"opportunistic\"": "default_level = \"secure\""]))
        #expect(errs.count == 1, "\(errs)")
        #expect(errs.first?.key == "outbound.default_level")
        #expect(errs.first?.line == 19)
        #expect(errs.first?.message.contains("'secure'") == true)
        #expect(errs.first?.message.contains("tls-exclusive") == true)
    }

    @Test func badLevelInDomainTable() {
        let errs = errors(configText("\n[outbound.domains]\n\"bank.example\" = \"encrypted\"\n"))
        #expect(errs.first?.key == "outbound.domains.\"bank.example\"")
        #expect(errs.first?.line == 25)
    }

    @Test func stringWhereNumberBelongs() {
        let errs = errors(configText(replacing: ["max_message_size = 1000000": "max_message_size = \"10MB\""]))
        #expect(errs.count == 1, "\(errs)")
        #expect(errs.first?.key == "limits.max_message_size")
        #expect(errs.first?.line == 22)
        #expect(errs.first?.message == "expected an integer, found a string")
    }

    @Test func missingCertificateFile() {
        let errs = errors(configText(replacing: [Fixtures.path("mx.pem"): "/nonexistent/relayd/cert.pem"]))
        #expect(errs.count == 1, "\(errs)")
        #expect(errs.first?.key == "tls.certificate")
        #expect(errs.first?.line == 14)
        #expect(errs.first?.message.contains("/nonexistent/relayd/cert.pem") == true)
    }

    @Test func keyThatDoesNotMatchCertificate() {
        let errs = errors(configText(replacing: [Fixtures.path("mx.key"): Fixtures.path("selfsigned.key")]))
        #expect(errs.first?.key == "tls.certificate")
        #expect(errs.first?.message.contains("mismatch") == true, "\(errs)")
    }

    @Test func floorBelowTLS10IsRefused() {
        let errs = errors(configText(replacing: ["min_version = \"TLSv1.2\"": "min_version = \"SSLv3\""]))
        #expect(errs.first?.key == "tls.min_version")
        #expect(errs.first?.line == 16)
    }

    @Test func submissionWithoutTLSIsRefused() {
        let errs = errors(configText(replacing: ["kind = \"submission\"": "kind = \"submission\"\nrequire_tls = false"]))
        #expect(errs.first?.key == "listener[1].require_tls")
        #expect(errs.first?.line == 12)
    }

    @Test func unreadableUsersFile() {
        let errs = errors(configText(replacing: ["spool_dir = \"spool\"": "spool_dir = \"spool\"\nusers_file = \"missing-users\""]))
        #expect(errs.first?.key == "server.users_file")
        #expect(errs.first?.message.contains("missing-users") == true)
    }

    @Test func allErrorsAreReportedNotOnlyTheFirst() {
        let errs = errors(configText(replacing: [
            "default_level = \"opportunistic\"": "default_level = \"secure\"",
            "max_message_size = 1000000": "max_message_size = \"big\"",
            Fixtures.path("mx.pem"): "/nonexistent/cert.pem",
            "hostname = \"relay.example.test\"": "hostname = \"relay.example.test\"\ncolour = \"blue\"",
        ]))
        #expect(Set(errs.compactMap(\.key)) == ["outbound.default_level", "limits.max_message_size", "tls.certificate", "server.colour"])
    }

    @Test func tomlSyntaxErrorHasLine() {
        let errs = errors(configText(replacing: ["kind = \"smtp\"": "kind = smtp"]))
        #expect(errs.count == 1)
        #expect(errs.first?.line == 7)
        #expect(errs.first?.key == nil)
    }

    @Test func badListenerAddressAndKind() {
        let errs = errors(configText(replacing: ["address = \"127.0.0.1:2525\"": "address = \"mail.example:99999\"",
                                                 "kind = \"submission\"": "kind = \"lmtp\""]))
        #expect(Set(errs.compactMap(\.key)) == ["listener[0].address", "listener[1].kind"])
    }

    @Test func badDurationsAndNetworks() {
        let errs = errors(configText("""
            [queue]
            retry_schedule = ["5 minutes"]
            max_lifetime = -3
            [relay]
            client_networks = ["10.0.0.0/33", "everyone"]
            [dns]
            servers = ["dns.example"]
            """))
        #expect(errs.compactMap(\.key).sorted() == ["dns.servers", "queue.max_lifetime", "queue.retry_schedule", "relay.client_networks", "relay.client_networks"])
    }

    @Test func durationParsing() {
        #expect(ConfigLoader.parseDuration("30s") == 30)
        #expect(ConfigLoader.parseDuration("5m") == 300)
        #expect(ConfigLoader.parseDuration("4h") == 14400)
        #expect(ConfigLoader.parseDuration("5d") == 432000)
        #expect(ConfigLoader.parseDuration("90") == 90)
        #expect(ConfigLoader.parseDuration("m") == nil)
        #expect(ConfigLoader.parseDuration("-5m") == nil)
        #expect(ConfigLoader.parseDuration("5w") == nil)
        #expect(ConfigLoader.parseDuration("99999999999999999999d") == nil)
    }

    @Test func keyLocatorHandlesArraysMultilineAndQuotedKeys() {
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
        #expect(loc.line(for: "a.x") == 3)
        #expect(loc.line(for: "a.list") == 4)
        #expect(loc.line(for: "a.text") == 7)
        #expect(loc.line(for: "a.y") == 2, "inside an array value is not a key; falls back to [a]")
        #expect(loc.line(for: "a.z") == 2, "inside a multi-line string is not a key")
        #expect(loc.line(for: "l[0].k") == 11)
        #expect(loc.line(for: "l[1].k") == 13)
        #expect(loc.line(for: "l[1].missing") == 12)
        #expect(loc.line(for: "b.c.\"d.e\"") == 15)
        #expect(loc.line(for: "nowhere") == nil)
    }
}
