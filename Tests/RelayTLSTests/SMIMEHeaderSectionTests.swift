// The header reading behind the outer fields, and the base64 body form,
// without OpenSSL.
import Testing
@testable import RelayTLS

@Suite struct SMIMEHeaderSectionTests {
    func names(_ text: String) -> [String] { SMIMEHeaderSection(Array(text.utf8)).fields.map(\.name) }

    @Test func fieldsFoldingAndTheEndOfTheSection() {
        let h = SMIMEHeaderSection(Array("From : a\r\nTo: b,\r\n\tc\r\nX: 1\r\n\r\nNot: header\r\n".utf8))
        #expect(h.fields.map(\.name) == ["from", "to", "x"])
        #expect(h.fields[1].lines.map { String(decoding: $0, as: UTF8.self) } == ["To: b,", "\tc"])
        #expect(String(decoding: h.lines(of: ["to", "from"]), as: UTF8.self) == "From : a\r\nTo: b,\r\n\tc\r\n")
    }

    @Test(arguments: [
        ("", [String]()),
        ("\r\n", []),
        ("\n", []),
        ("A: 1", ["a"]),
        ("A: 1\nB: 2\n\nC: 3", ["a", "b"]),
        (" lead\r\nno colon\r\nB: 2\r\n", ["b"]),
        ("A: 1\r\n\r", ["a"]),
    ])
    func defensiveReading(_ text: String, _ expected: [String]) {
        #expect(names(text) == expected)
    }

    @Test func overlongAndUnsafeFieldsStayInside() {
        let long = "To: " + String(repeating: "x", count: 995)
        let h = SMIMEHeaderSection(Array("\(long)\r\nCc: a\u{0}b\r\nFrom: ok\r\nDate: a\rb\r\n".utf8))
        #expect(String(decoding: h.lines(of: ["to", "cc", "from", "date"]), as: UTF8.self) == "From: ok\r\n")
        let fits = "To: " + String(repeating: "x", count: 994)
        #expect(SMIMEHeaderSection(Array(fits.utf8)).lines(of: ["to"]).count == 998 + 2)
    }

    @Test(arguments: [("", ""), ("f", "Zg==\r\n"), ("fo", "Zm8=\r\n"), ("foo", "Zm9v\r\n"), ("foobar", "Zm9vYmFy\r\n")])
    func base64Vectors(_ input: String, _ expected: String) {
        #expect(String(decoding: MIMEBase64.lines(Array(input.utf8)), as: UTF8.self) == expected)
    }

    @Test func base64LinesAre76() {
        let text = String(decoding: MIMEBase64.lines([UInt8](repeating: 0xff, count: 57 * 2 + 1)), as: UTF8.self)
        #expect(text.components(separatedBy: "\r\n") == [String(repeating: "/", count: 76), String(repeating: "/", count: 76), "/w==", ""])
    }
}
