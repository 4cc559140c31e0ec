// [mta_sts]: on by default with a 60 s fetch and a daily refresh; each key
// checked, a bad value named with its key.
import Testing
@testable import RelayConfig
import RelayTestSupport

@Suite struct MTASTSConfig {
    @Test func defaults() throws {
        let c = try configForTests("")
        #expect(c.mtaSTS.enabled)
        #expect(c.mtaSTS.fetchTimeout == 60)
        #expect(c.mtaSTS.refreshInterval == 86_400)
    }

    @Test func values() throws {
        let c = try configForTests("[mta_sts]\nenabled = false\nfetch_timeout = \"20s\"\nrefresh_interval = \"6h\"")
        #expect(!c.mtaSTS.enabled)
        #expect(c.mtaSTS.fetchTimeout == 20)
        #expect(c.mtaSTS.refreshInterval == 6 * 3600)
    }

    @Test(arguments: [
        ("fetch_timeout = \"6m\"", "mta_sts.fetch_timeout"),
        ("fetch_timeout = 0", "mta_sts.fetch_timeout"),
        ("refresh_interval = \"30m\"", "mta_sts.refresh_interval"),
        ("enabled = \"yes\"", "mta_sts.enabled"),
        ("refesh_interval = \"1d\"", "mta_sts.refesh_interval"),
    ])
    func badValuesNameTheirKey(_ line: String, _ key: String) {
        do {
            _ = try configForTests("[mta_sts]\n\(line)")
            Issue.record("accepted: \(line)")
        } catch let e as ConfigErrors {
            #expect(e.errors.contains { $0.description.contains(key) }, "\(e)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}
