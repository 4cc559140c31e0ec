import ArgumentParser
import RelayCore

/// `relayd version`: relayd and the versions of the C libraries it runs on.
struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print relayd, OpenSSL and c-ares versions.")

    func run() {
        print("relayd \(RelaydVersion.string)")
        print("OpenSSL \(TLSLibrary.runtimeVersion.replacingPrefix("OpenSSL ")) (built with \(TLSLibrary.headerVersion))")
        print("c-ares \(CAresLibrary.runtimeVersion) (built with \(CAresLibrary.headerVersion))")
    }
}

extension String {
    func replacingPrefix(_ prefix: String) -> String {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self
    }
}
