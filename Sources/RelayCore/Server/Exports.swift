// RelayCore is the top layer and the one module the executable imports:
// it re-exports every layer below it (see Package.swift for why there is
// no separate umbrella target).
@_exported import RelayAuth
@_exported import RelayConfig
@_exported import RelayDelivery
@_exported import RelayDNS
@_exported import RelayIO
@_exported import RelayLog
@_exported import RelayMetrics
@_exported import RelayModel
@_exported import RelayPolicy
@_exported import RelayQueue
@_exported import RelaySMTP
@_exported import RelayTLS
@_exported import RelaySync
@_exported import RelayHTTPS
@_exported import RelayMTASTS
@_exported import RelayLearned
@_exported import RelaySTS
@_exported import RelayTLSRPT
@_exported import RelayPostgres
