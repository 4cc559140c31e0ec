// `[learned]`: the windows of the learned-status layer (RelayLearned).
// A plain value here, beside the other policy vocabulary, so the config
// (which may not import the record store) can hold it.
/// The window settings of the learned-status rules.
public struct LearnedSettings: Equatable, Sendable {
    public var enabled = true
    /// Every probe for this long found less than the learned level → relax.
    public var relaxAfter = 14 * 86_400
    /// Not confirmed for this long → the record expires.
    public var expireAfter = 180 * 86_400
    /// How often each domain is probed (with jitter).
    public var probeInterval = 86_400
    /// Probes running at once, across all domains.
    public var probeConcurrency = 4
    /// One probe's bound per step (connect, each reply, the handshake).
    public var probeTimeout = 30
    /// Probes needed in a relax window (so days of downtime do not count as
    /// days of probing).
    public static let minimumProbesToRelax = 3

    public init() {}
}

