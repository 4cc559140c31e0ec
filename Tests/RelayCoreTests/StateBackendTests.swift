// [state] → the PostgreSQL pool's settings (Server/StateBackend.swift).
import Testing
import RelayCore
import RelayTestSupport

@Suite struct StateBackendMapping {
    @Test func fileBackendMakesNoPool() throws {
        #expect(PGPoolConfiguration(state: try configForTests("").state) == nil)
    }

    @Test func postgresBackendMapsEverySetting() throws {
        let state = try configForTests("""
            [state]
            backend = "postgres"
            postgres = "postgresql://relayd@db.example/relayd"
            pool_size = 7
            statement_timeout = "3s"
            sslmode = "require"
            instance = "mx2"
            """).state
        let pool = try #require(PGPoolConfiguration(state: state))
        #expect(pool.size == 7)
        #expect(pool.connect.url == "postgresql://relayd@db.example/relayd")
        #expect(pool.connect.sslMode == .require)
        #expect(pool.connect.statementTimeoutMilliseconds == 3000)
        #expect(pool.connect.applicationName == "relayd mx2")
        #expect(pool.connect.keywords.contains { $0 == ("options", "-c statement_timeout=3000") })
    }
}
