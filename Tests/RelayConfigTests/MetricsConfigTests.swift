// [metrics] address: off unless set; validated like a listener's address;
// never an SMTP listener's; a change needs a restart.
import Testing
@testable import RelayModel
@testable import RelayConfig
import RelayTestSupport

@Suite struct MetricsConfig {
    @Test func offByDefaultAndWhenEmpty() throws {
        #expect(try configForTests("").metrics.address == nil)
        #expect(try configForTests("[metrics]\naddress = \"\"").metrics.address == nil)
        #expect(try configForTests("[metrics]").metrics.address == nil)
    }

    @Test func addresses() throws {
        #expect(try configForTests("[metrics]\naddress = \"127.0.0.1:9464\"").metrics.address == HostPort("127.0.0.1:9464", defaultPort: nil))
        #expect(try configForTests("[metrics]\naddress = \"127.0.0.1\"").metrics.address?.port == 9464, "the default port")
        #expect(try configForTests("[metrics]\naddress = \"[::1]:9100\"").metrics.address?.port == 9100)
        #expect(try configForTests("[metrics]\naddress = \"*:9464\"").metrics.address?.host == "*")
    }

    @Test(arguments: [
        "address = \"localhost:9464\"",
        "address = \"127.0.0.1:99999\"",
        "address = \"127.0.0.1:2525\"",   // the SMTP listener's
        "address = 9464",
        "adress = \"127.0.0.1:9464\"",
    ])
    func badValuesNameTheirKey(_ line: String) {
        do {
            _ = try configForTests("[metrics]\n\(line)")
            Issue.record("accepted: \(line)")
        } catch let e as ConfigErrors {
            #expect(e.errors.contains { $0.description.contains("metrics.") }, "\(e)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func aChangeNeedsARestart() throws {
        let a = try configForTests("[metrics]\naddress = \"127.0.0.1:9464\"")
        let b = try configForTests("[metrics]\naddress = \"127.0.0.1:9465\"")
        #expect(b.changesNeedingRestart(from: a) == ["metrics.address"])
        #expect(a.changesNeedingRestart(from: a).isEmpty)
    }
}
