// Per-message delivery progress, kept beside the immutable queue file in
// spool/state/ID: which recipients are finished and how, how many attempts
// were made, when the next is due and why the last one failed. Written
// atomically (tmp, fsync, rename, directory fsync) after each attempt and
// before the queue file is removed, so a crash can repeat a delivery
// (at-least-once) but never forget one. The delay-notice line is optional:
// files written before delay notices existed read as "none sent yet", and a
// message that never got one is written exactly as before.
//
//   relayd-state 1
//   attempts <n>
//   next <unix seconds>
//   delay-notice <unix seconds>          (only once a delay notice was sent)
//   rcpt <index> pending|delivered|bounced|dropped <status or -> <xtext last reason or -> <xtext last TLS reason or ->
//   end <FNV-1a 64 of the lines above>
import RelayModel
public struct DeliveryState: Equatable, Sendable {
    public enum Status: String, Sendable { case pending, delivered, bounced, dropped }

    public struct Recipient: Equatable, Sendable {
        public var status: Status
        /// The last failure (or the delivered reply), for queue listings and DSNs.
        public var detail: String
        /// RFC 3463 status for the DSN, when bounced.
        public var enhancedStatus: String
        /// The last TLS-policy failure, kept even when a later attempt
        /// failed for another reason, so the bounce can say TLS was the
        /// problem.
        public var tlsDetail: String

        public init(status: Status = .pending, detail: String = "", enhancedStatus: String = "", tlsDetail: String = "") {
            self.status = status
            self.detail = detail
            self.enhancedStatus = enhancedStatus
            self.tlsDetail = tlsDetail
        }
    }

    public var attempts: Int
    public var nextAttempt: Int
    public var recipients: [Recipient]
    /// When the sender was told the message is delayed (unix seconds);
    /// 0 while no delay notice was sent. One per message.
    public var delayNoticeSent: Int = 0

    public init(recipientCount: Int, nextAttempt: Int = 0) {
        attempts = 0
        self.nextAttempt = nextAttempt
        recipients = Array(repeating: Recipient(), count: recipientCount)
    }

    public var pendingIndexes: [Int] { recipients.indices.filter { recipients[$0].status == .pending } }
    public var isFinished: Bool { pendingIndexes.isEmpty }

    public func encode() -> [UInt8] {
        var s = "relayd-state 1\nattempts \(attempts)\nnext \(nextAttempt)\n"
        if delayNoticeSent != 0 { s += "delay-notice \(delayNoticeSent)\n" }
        for (i, r) in recipients.enumerated() {
            let detail = r.detail.isEmpty ? "-" : XText.encode(r.detail)
            let status = r.enhancedStatus.isEmpty ? "-" : r.enhancedStatus
            let tls = r.tlsDetail.isEmpty ? "-" : XText.encode(r.tlsDetail)
            s += "rcpt \(i) \(r.status.rawValue) \(status) \(detail) \(tls)\n"
        }
        let body = Array(s.utf8)
        return body + Array("end \(QueueFile.hex16(QueueFile.fnv1a64(body[...])))\n".utf8)
    }

    public static func decode(_ data: [UInt8]) throws -> DeliveryState {
        let endLength = 4 + 16 + 1
        guard data.count > endLength, data.last == 10 else { throw QueueFileError.truncated }
        let body = data[..<(data.count - endLength)]
        let end = String(decoding: data[(data.count - endLength)..<(data.count - 1)], as: UTF8.self)
        guard end == "end " + QueueFile.hex16(QueueFile.fnv1a64(body)) else { throw QueueFileError.checksumMismatch }
        let lines = String(decoding: body, as: UTF8.self).split(separator: "\n")
        guard lines.first == "relayd-state 1", lines.count >= 3 else { throw QueueFileError.badMagic }
        func value(_ line: Substring, _ key: String) throws -> Int {
            let parts = line.split(separator: " ")
            guard parts.count == 2, parts[0] == key, let v = Int(parts[1]) else { throw QueueFileError.badRecord(key) }
            return v
        }
        var state = DeliveryState(recipientCount: 0)
        state.attempts = try value(lines[1], "attempts")
        state.nextAttempt = try value(lines[2], "next")
        var rcptLines = lines.dropFirst(3)
        if let line = rcptLines.first, line.hasPrefix("delay-notice ") {
            state.delayNoticeSent = try value(line, "delay-notice")
            rcptLines = rcptLines.dropFirst()
        }
        for (n, line) in rcptLines.enumerated() {
            let parts = line.split(separator: " ")
            guard parts.count == 6, parts[0] == "rcpt", Int(parts[1]) == n,
                  let status = Status(rawValue: String(parts[2])) else { throw QueueFileError.badRecord("rcpt") }
            let detail = parts[4] == "-" ? "" : (XText.decode(String(parts[4])) ?? "")
            let tls = parts[5] == "-" ? "" : (XText.decode(String(parts[5])) ?? "")
            state.recipients.append(Recipient(status: status, detail: detail,
                                              enhancedStatus: parts[3] == "-" ? "" : String(parts[3]), tlsDetail: tls))
        }
        return state
    }
}

extension Spool {
    public var stateDirectory: String { root + "/state" }

    public func writeState(_ id: String, _ state: DeliveryState) throws {
        try Self.makeDirectory(stateDirectory)
        let tmp = path(.tmp, id + ".state")
        do {
            try writeFile(tmp, state.encode(), replacing: true)
            try rename(tmp, to: stateDirectory + "/" + id)
            try syncDirectory(stateDirectory)
        } catch {
            _ = unlinkPath(tmp)
            throw error
        }
    }

    /// nil when the message has no state yet (never attempted).
    public func readState(_ id: String) throws -> DeliveryState? {
        guard let data = try readFileIfExists(stateDirectory + "/" + id) else { return nil }
        return try DeliveryState.decode(data)
    }

    public func removeState(_ id: String) {
        _ = unlinkPath(stateDirectory + "/" + id)
    }
}
