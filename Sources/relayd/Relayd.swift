// The relayd executable: parses arguments, loads the config, and hands off
// to RelayCore. It owns process concerns only (signals, exit codes, log
// bootstrap); everything about mail lives in RelayCore.
import ArgumentParser
import RelayCore

@main
struct Relayd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relayd",
        abstract: "SMTP relay that enforces a per-destination TLS policy.",
        version: RelaydVersion.string,
        subcommands: [Run.self, CheckConfig.self, QueueCommand.self, PolicyCommand.self, ProbeCommand.self, ReportCommand.self,
                      StateCommand.self,
                      Version.self])
}

enum RelaydVersion {
    static let string = "0.1.0"
}

struct ConfigOption: ParsableArguments {
    @Option(name: .shortAndLong, help: "Path to the policy config file.")
    var config: String = "/etc/relayd/relayd.conf"
}
