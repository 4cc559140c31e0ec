import ArgumentParser
import RelayCore
#if canImport(Glibc)
import Glibc
#endif

/// `relayd check-config`: like `nginx -t`, every problem, exit 0 or 1.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check the config file and every file it names; print all problems.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        do {
            let config = try ConfigLoader.load(path: options.config)
            print("\(options.config): configuration OK (\(config.listeners.count) listeners, default level \(config.outbound.defaultLevel.rawValue), \(config.outbound.domains.count) per-domain entries)")
        } catch let e as ConfigErrors {
            for error in e.errors { printError(error.description) }
            printError("\(options.config): \(e.errors.count) problem\(e.errors.count == 1 ? "" : "s") found")
            throw ExitCode(1)
        }
    }
}

func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
