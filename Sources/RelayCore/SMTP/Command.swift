// SMTP commands (RFC 5321 §4.1) parsed from one line without its CRLF.
// The parser is strict where strictness protects the relay (paths, control
// bytes) and tolerant where RFC 5321 asks for it (verb case, trailing space).
import RelayModel
public enum Command: Equatable, Sendable {
    case helo(String)
    case ehlo(String)
    case mail(ReversePath, [MailParameter])
    case rcpt(Mailbox, [MailParameter])
    case data
    case bdat
    case rset
    case noop
    case quit
    case vrfy(String)
    case expn(String)
    case help
    case starttls
    case auth(mechanism: String, initialResponse: String?)
}

public struct MailParameter: Equatable, Sendable {
    public let keyword: String     // upper-cased
    public let value: String?
}

public enum CommandError: Error, Equatable, Sendable {
    /// Verb not recognised: 500 5.5.1 / 502 5.5.1.
    case unknownCommand(String)
    /// Recognised verb, bad arguments: 501 5.5.4 (or the path codes).
    case syntax(String)
    /// Malformed sender path: 501 5.1.7.
    case badSender(String)
    /// Malformed recipient path: 501 5.1.3.
    case badRecipient(String)
    /// Control or NUL bytes, or invalid UTF-8: 500 5.5.2.
    case badCharacters
}

public enum CommandParser {
    /// Parses one command line (without CRLF). UTF-8 in addresses parses
    /// here; whether the client may use it (SMTPUTF8 on MAIL) is the
    /// session's decision.
    public static func parse(_ line: [UInt8]) -> Result<Command, CommandError> {
        if line.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7f }) {
            return .failure(.badCharacters)
        }
        guard let text = String(validating: line, as: UTF8.self) else { return .failure(.badCharacters) }
        let (verbPart, restPart) = splitVerb(text)
        let verb = verbPart.uppercased()
        let rest = restPart
        switch verb {
        case "HELO", "EHLO":
            let domain = rest.trimmingSpaces
            guard !domain.isEmpty, !domain.contains(" ") else {
                return .failure(.syntax("\(verb) requires a domain or address literal"))
            }
            guard isValidHeloArgument(domain) else { return .failure(.syntax("invalid \(verb) argument")) }
            return .success(verb == "HELO" ? .helo(domain) : .ehlo(domain))
        case "MAIL":
            guard let arg = stripPrefix(rest, "FROM:") else { return .failure(.syntax("expected MAIL FROM:<address>")) }
            let (pathText, params) = splitPathAndParameters(arg)
            guard let path = ReversePath.parse(pathText) else { return .failure(.badSender("bad sender address syntax")) }
            guard let parameters = parseParameters(params) else { return .failure(.syntax("bad MAIL parameters")) }
            return .success(.mail(path, parameters))
        case "RCPT":
            guard let arg = stripPrefix(rest, "TO:") else { return .failure(.syntax("expected RCPT TO:<address>")) }
            let (pathText, params) = splitPathAndParameters(arg)
            guard let mailbox = Mailbox.parseForwardPath(pathText) else {
                return .failure(.badRecipient("bad recipient address syntax"))
            }
            guard let parameters = parseParameters(params) else { return .failure(.syntax("bad RCPT parameters")) }
            return .success(.rcpt(mailbox, parameters))
        case "DATA": return noArgs(rest, .data)
        case "BDAT": return .success(.bdat)
        case "RSET": return noArgs(rest, .rset)
        case "NOOP": return .success(.noop)   // RFC 5321: NOOP may carry a string
        case "QUIT": return noArgs(rest, .quit)
        case "STARTTLS": return noArgs(rest, .starttls)
        case "HELP": return .success(.help)
        case "VRFY": return .success(.vrfy(rest.trimmingSpaces))
        case "EXPN": return .success(.expn(rest.trimmingSpaces))
        case "AUTH":
            let parts = rest.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count == 1 || parts.count == 2 else { return .failure(.syntax("expected AUTH mechanism [initial-response]")) }
            return .success(.auth(mechanism: parts[0].uppercased(), initialResponse: parts.count == 2 ? String(parts[1]) : nil))
        default:
            return .failure(.unknownCommand(verb.count > 16 ? String(verb.prefix(16)) + "…" : verb))
        }
    }

    private static func noArgs(_ rest: String, _ command: Command) -> Result<Command, CommandError> {
        rest.trimmingSpaces.isEmpty ? .success(command) : .failure(.syntax("no arguments allowed"))
    }

    private static func splitVerb(_ text: String) -> (String, String) {
        guard let space = text.firstIndex(of: " ") else { return (text, "") }
        return (String(text[..<space]), String(text[text.index(after: space)...]))
    }

    /// "FROM:" matched case-insensitively; one optional space after the
    /// colon is tolerated because common clients send it.
    private static func stripPrefix(_ rest: String, _ prefix: String) -> String? {
        guard rest.count >= prefix.count, rest.prefix(prefix.count).uppercased() == prefix else { return nil }
        var arg = Substring(rest.dropFirst(prefix.count))
        if arg.first == " " { arg = arg.dropFirst() }
        return String(arg)
    }

    /// The path is "<...>" (with possible quoted '>' inside a quoted local
    /// part); parameters follow after a space.
    private static func splitPathAndParameters(_ arg: String) -> (String, String) {
        let scalars = Array(arg.unicodeScalars)
        guard scalars.first == "<" else {
            // RFC 5321 requires angle brackets; pass the whole word on so
            // the path parser rejects it.
            let (p, r) = splitVerb(arg)
            return (p, r)
        }
        var inQuote = false
        var escaped = false
        for (i, s) in scalars.enumerated() {
            if escaped { escaped = false; continue }
            if inQuote && s == "\\" { escaped = true; continue }
            if s == "\"" { inQuote.toggle(); continue }
            if s == ">" && !inQuote {
                var path = String.UnicodeScalarView(); path.append(contentsOf: scalars[0...i])
                var rest = String.UnicodeScalarView(); rest.append(contentsOf: scalars[(i + 1)...])
                return (String(path), String(rest))
            }
        }
        return (arg, "")
    }

    private static func parseParameters(_ text: String) -> [MailParameter]? {
        let trimmed = text.trimmingSpaces
        if trimmed.isEmpty { return [] }
        // Parameters must be separated from the path by a space.
        guard text.first == " " else { return nil }
        var out: [MailParameter] = []
        for word in trimmed.split(separator: " ", omittingEmptySubsequences: true) {
            let kv = word.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = kv[0]
            guard !key.isEmpty, key.utf8.allSatisfy({ isAlnum($0) || $0 == UInt8(ascii: "-") }),
                  isAlnum(key.utf8.first!) else { return nil }
            var value: String?
            if kv.count == 2 {
                // esmtp-value: any CHAR except "=", SP and controls.
                guard !kv[1].isEmpty, kv[1].unicodeScalars.allSatisfy({ $0.value > 32 && $0 != "=" }) else { return nil }
                value = String(kv[1])
            }
            out.append(MailParameter(keyword: key.uppercased(), value: value))
        }
        return out
    }

    static func isAlnum(_ b: UInt8) -> Bool { ASCII.isAlnum(b) }

    /// HELO/EHLO: a domain or an address literal. Postfix-like tolerance
    /// for underscores and trailing dots is not extended to anything that
    /// could smuggle syntax into a Received header.
    package static func isValidHeloArgument(_ s: String) -> Bool {
        if s.hasPrefix("[") { return AddressLiteral.isValid(s) }
        return s.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") }
            && s.utf8.count <= 255
    }
}
