// How sending one day's report for one domain is going, kept under the
// spool so a restart neither sends a report twice nor forgets one:
//
//   tlsrpt-sent 1
//   day 2026-01-31
//   domain example.com
//   attempts <n>
//   first <unix seconds of the first attempt: retries end 24 hours later>
//   next <unix seconds of the next attempt>
//   finished 0|1
//   done <xtext destination>      (0 or more: destinations that took the report)
//   note <xtext>                  (optional: the last attempt's outcome, for the operator)
import RelayModel

public struct TLSRPTSendState: Equatable, Sendable {
    public var day: TLSRPTDay
    public var domain: String
    public var attempts: Int
    public var first: Int
    public var next: Int
    public var finished: Bool
    public var done: [String]
    public var note: String

    public init(day: TLSRPTDay, domain: String, attempts: Int = 0, first: Int, next: Int? = nil, finished: Bool = false,
                done: [String] = [], note: String = "") {
        self.day = day
        self.domain = domain
        self.attempts = attempts
        self.first = first
        self.next = next ?? first
        self.finished = finished
        self.done = done
        self.note = note
    }

    public func encode() -> [UInt8] {
        var s = "tlsrpt-sent 1\nday \(day)\ndomain \(domain)\nattempts \(attempts)\nfirst \(first)\nnext \(next)\nfinished \(finished ? 1 : 0)\n"
        for d in done { s += "done \(XText.encode(d))\n" }
        if !note.isEmpty { s += "note \(XText.encode(note))\n" }
        return Array(s.utf8)
    }

    public static func decode(_ data: [UInt8]) -> TLSRPTSendState? {
        guard data.allSatisfy({ ($0 >= 0x20 && $0 < 0x7f) || $0 == 10 }), data.last == 10 else { return nil }
        let lines = String(decoding: data.dropLast(), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 7, lines[0] == "tlsrpt-sent 1" else { return nil }
        func value(_ i: Int, _ key: String) -> String? {
            lines[i].hasPrefix(key + " ") ? String(lines[i].dropFirst(key.count + 1)) : nil
        }
        guard let day = value(1, "day").flatMap(TLSRPTDay.init), let domain = value(2, "domain"),
              DomainRecordName.isValid(domain), let attempts = value(3, "attempts").flatMap({ Int($0) }), attempts >= 0,
              let first = value(4, "first").flatMap({ Int($0) }),
              let next = value(5, "next").flatMap({ Int($0) }), let f = value(6, "finished"), f == "0" || f == "1" else { return nil }
        var state = TLSRPTSendState(day: day, domain: domain, attempts: attempts, first: first, next: next, finished: f == "1")
        for line in lines.dropFirst(7) {
            if line.hasPrefix("done "), let d = XText.decode(String(line.dropFirst(5))) {
                state.done.append(d)
            } else if line.hasPrefix("note "), state.note.isEmpty, let n = XText.decode(String(line.dropFirst(5))) {
                state.note = n
            } else {
                return nil
            }
        }
        return state
    }
}
