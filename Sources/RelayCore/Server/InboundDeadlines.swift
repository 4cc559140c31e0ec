// The time limits of one inbound session as one pure value. It is told what
// happened and when (on the caller's monotonic clock, in seconds) and answers
// when the session must next be cut off and which limit that is, so the
// connection needs a single timer, and the rules run in unit tests on a
// fake clock.
//
// Why more than an idle timer: re-arming on every byte lets a client that
// sends one byte every few seconds hold a connection slot forever. Here a
// command line must be complete within `idle` of its first byte, a DATA
// phase within `data` of the 354, and a session must complete a message
// within `session` of its start or of its previous message.
struct InboundDeadlines: Equatable, Sendable {
    enum Limit: String, Equatable, Sendable {
        case idle = "idle timeout"
        case commandLine = "command line not completed in time"
        case dataPhase = "DATA phase not completed in time"
        case session = "no message completed in time"
    }

    let idle: Double
    let data: Double
    let session: Double
    private(set) var lastInput: Double
    private(set) var lineStarted: Double?
    private(set) var dataStarted: Double?
    private(set) var sessionClock: Double

    init(idle: Int, data: Int, session: Int, now: Double) {
        self.idle = Double(idle)
        self.data = Double(data)
        self.session = Double(session)
        lastInput = now
        sessionClock = now
    }

    /// Input arrived. `partialLine`: the session now holds the start of a
    /// command line it has not seen the end of; `inData`: it is between 354
    /// and the end marker.
    mutating func received(at now: Double, partialLine: Bool, inData: Bool) {
        lastInput = now
        if partialLine {
            if lineStarted == nil { lineStarted = now }
        } else {
            lineStarted = nil
        }
        if inData {
            if dataStarted == nil { dataStarted = now }
        } else {
            dataStarted = nil
        }
    }

    /// A message was queued: the session limit starts again.
    mutating func messageCompleted(at now: Double) {
        sessionClock = now
    }

    /// The earliest limit and when it expires.
    var next: (at: Double, limit: Limit) {
        var best = (at: lastInput + idle, limit: Limit.idle)
        func consider(_ at: Double, _ limit: Limit) {
            if at <= best.at { best = (at, limit) }
        }
        if let lineStarted { consider(lineStarted + idle, .commandLine) }
        if let dataStarted { consider(dataStarted + data, .dataPhase) }
        consider(sessionClock + session, .session)
        return best
    }
}
