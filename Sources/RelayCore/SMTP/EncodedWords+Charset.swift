// The charsets an RFC 2047 encoded-word may name that relayd can read
// without Foundation: UTF-8, US-ASCII, ISO-8859-1, ISO-8859-15 and
// Windows-1252 (the one Western mail clients actually send). Names match
// case-insensitively, an RFC 2231 "*language" suffix is ignored, and any
// other charset leaves its word literal (EncodedWords.word).
extension EncodedWords {
    enum Charset {
        case utf8, ascii, latin1, latin9, windows1252

        init?(_ name: [UInt8]) {
            // "UTF-8*en": the language is not part of the charset.
            let bare = name.prefix { $0 != UInt8(ascii: "*") }.map { $0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0 }
            switch String(decoding: bare, as: UTF8.self) {
            case "utf-8", "utf8": self = .utf8
            case "us-ascii", "ascii": self = .ascii
            case "iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1": self = .latin1
            case "iso-8859-15", "iso8859-15", "iso_8859-15", "latin9", "latin-9": self = .latin9
            case "windows-1252", "cp1252", "x-cp1252": self = .windows1252
            default: return nil
            }
        }

        /// The decoded bytes of a word as UTF-8. UTF-8 passes through
        /// unchecked (adjacent words are joined first, then checked once);
        /// a byte US-ASCII does not have becomes U+FFFD.
        func utf8(_ raw: [UInt8]) -> [UInt8] {
            if self == .utf8 { return raw }
            var out: [UInt8] = []
            out.reserveCapacity(raw.count * 2)
            for b in raw {
                let scalar: UInt32
                switch self {
                case .ascii: scalar = b < 128 ? UInt32(b) : 0xFFFD
                case .latin1, .utf8: scalar = UInt32(b)
                case .latin9: scalar = Charset.latin9(b)
                case .windows1252: scalar = b >= 0x80 && b <= 0x9F ? Charset.windows1252High[Int(b - 0x80)] : UInt32(b)
                }
                out += String(Unicode.Scalar(scalar) ?? "\u{FFFD}").utf8
            }
            return out
        }

        /// Windows-1252's 0x80…0x9F; the five bytes it leaves undefined
        /// map to the C1 control of the same number, as WHATWG's decoder does.
        static let windows1252High: [UInt32] = [
            0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
            0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
            0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
            0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
        ]

        /// ISO-8859-15: ISO-8859-1 but for eight code points (the euro, Š, š, Ž, ž, Œ, œ, Ÿ).
        static func latin9(_ b: UInt8) -> UInt32 {
            switch b {
            case 0xA4: return 0x20AC
            case 0xA6: return 0x0160
            case 0xA8: return 0x0161
            case 0xB4: return 0x017D
            case 0xB8: return 0x017E
            case 0xBC: return 0x0152
            case 0xBD: return 0x0153
            case 0xBE: return 0x0178
            default: return UInt32(b)
            }
        }
    }
}
