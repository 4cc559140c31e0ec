// From the validated `[state]` section to the PostgreSQL pool's settings.
// Here, in the top layer, because Config does not import the client and
// the client does not read the config.
import Dispatch
import RelayConfig
import RelayPostgres

extension PGPoolConfiguration {
    /// nil unless `backend = "postgres"`.
    public init?(state: Config.State, applicationName: String = "relayd") {
        guard state.backend == .postgres, let url = state.postgres else { return nil }
        let ssl: PGSSLMode
        switch state.sslMode {
        case .disable: ssl = .disable
        case .require: ssl = .require
        case .verifyFull: ssl = .verifyFull
        }
        let connect = PGConnectOptions(url: url, passfile: state.passfile, sslMode: ssl, sslRootCert: state.sslRootCert,
                                       statementTimeoutMilliseconds: state.statementTimeout * 1000,
                                       connectTimeoutSeconds: 5, applicationName: "\(applicationName) \(state.instance)")
        self.init(connect: connect, size: state.poolSize)
    }
}
