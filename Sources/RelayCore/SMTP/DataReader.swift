// The DATA phase decoder (RFC 5321 §4.5.2 transparency, §4.1.1.4 end of
// data). It takes raw bytes, removes dot-stuffing and finds the one true end
// marker CRLF "." CRLF.
//
// SMTP smuggling defence: a CR not followed by LF, or an LF not preceded by
// CR, anywhere in the data is a fatal error. Different MTAs disagree about
// what such bytes mean (is "\n.\r\n" an end of data?), and that
// disagreement is the whole attack, so relayd refuses to have an opinion:
// it rejects the message and drops the connection, which makes it
// impossible for any byte after the bad one to be read as a new command.
//
// A NUL byte anywhere in the content is refused too, but only at the end
// marker: unlike a bare line ending it does not make the end of data
// ambiguous to relayd, so the session stays in step. It is refused at all
// because a next hop that strips NULs would turn "CR LF NUL . CR LF" into
// an end of data of its own: the same smuggling one hop later.
public struct DataReader: Sendable {
    public enum Failure: Equatable, Sendable {
        /// Bare CR or LF: fatal, the connection must close.
        case bareLineEnding
        /// A line over 1000 octets including CRLF (RFC 5321 §4.5.3.1.6).
        case lineTooLong
        /// More than the SIZE limit; counted while reading, not after.
        case tooLarge
        /// A NUL byte in the content (reported at the end marker).
        case nulByte
    }

    public enum Outcome: Equatable, Sendable {
        case needMore
        /// End of data seen; `body` is the unstuffed message with CRLFs.
        case complete(body: [UInt8])
        /// End of data seen (or, for bareLineEnding, not waited for).
        case failed(Failure)
    }

    private enum State: Sendable { case normal, sawCR, dotAtLineStart, dotCR }

    public let maxSize: Int
    public let maxLineLength: Int
    private var state = State.normal
    private var atLineStart = true
    private var lineLength = 0
    private var body: [UInt8] = []
    private var overLongLine = false
    private var overSize = false
    private var sawNUL = false
    public private(set) var octetsSeen = 0

    public init(maxSize: Int, maxLineLength: Int = 1000) {
        self.maxSize = maxSize
        self.maxLineLength = maxLineLength
    }

    private mutating func append(_ b: UInt8) {
        if b == 0 { sawNUL = true }
        lineLength += 1
        if lineLength > maxLineLength { overLongLine = true }
        if body.count >= maxSize { overSize = true; return }
        if !overLongLine { body.append(b) }
    }

    /// Consumes bytes up to and including the end marker. Returns how many
    /// were consumed (the rest belongs to the next pipelined command).
    public mutating func consume(_ bytes: ArraySlice<UInt8>) -> (consumed: Int, outcome: Outcome) {
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let b = bytes[i]
            i += 1
            octetsSeen += 1
            switch state {
            case .normal:
                if b == 13 {
                    state = .sawCR
                } else if b == 10 {
                    return (i - bytes.startIndex, .failed(.bareLineEnding))
                } else if atLineStart && b == 46 {
                    state = .dotAtLineStart
                    atLineStart = false
                    lineLength = 1
                } else {
                    atLineStart = false
                    append(b)
                }
            case .sawCR:
                guard b == 10 else { return (i - bytes.startIndex, .failed(.bareLineEnding)) }
                append(13); append(10)
                lineLength = 0
                atLineStart = true
                state = .normal
            case .dotAtLineStart:
                if b == 13 {
                    state = .dotCR
                } else if b == 10 {
                    return (i - bytes.startIndex, .failed(.bareLineEnding))
                } else {
                    // Transparency: the leading dot is removed.
                    append(b)
                    state = .normal
                }
            case .dotCR:
                guard b == 10 else { return (i - bytes.startIndex, .failed(.bareLineEnding)) }
                let consumed = i - bytes.startIndex
                if sawNUL { return (consumed, .failed(.nulByte)) }
                if overSize { return (consumed, .failed(.tooLarge)) }
                if overLongLine { return (consumed, .failed(.lineTooLong)) }
                let result = body
                body = []
                return (consumed, .complete(body: result))
            }
        }
        return (bytes.count, .needMore)
    }
}
