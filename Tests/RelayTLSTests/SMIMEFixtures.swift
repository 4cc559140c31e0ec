// Keys and certificates for the S/MIME tests, made once per test run with
// the openssl tool in a temporary directory (RSA 2048 and EC P-256, with and
// without an S/MIME Capabilities extension), and the openssl tool again as
// the independent judge: `openssl cms -decrypt` and `-cmsout -print` read
// what SMIMEEncryption wrote.
import Foundation

struct SMIMEFixtureError: Error, CustomStringConvertible {
    let description: String
}

/// Runs /usr/bin/env openssl with `arguments`; the exit status and stdout.
@discardableResult
func openssl(_ arguments: [String]) throws -> (status: Int32, output: [UInt8]) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["openssl"] + arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, Array(data))
}

struct SMIMEFixtures: Sendable {
    /// A recipient: its address, certificate file (also in `certificates/`
    /// under the address's name) and private key.
    struct Party: Sendable {
        let address: String
        let certificate: String
        let key: String
    }

    let root: String
    /// The SMIMECertificateDirectory of the tests.
    var certificates: String { root + "/certs" }

    static let rsa = "alice@rsa.example"
    static let ec = "bob@ec.example"
    static let cbcOnly = "carol@cbc.example"
    static let gcmAndCBC = "dave@both.example"
    static let smith = "dr.smith@partner.example"
    static let signOnly = "erin@signonly.example"
    static let garbage = "frank@garbage.example"
    static let ecEncipherOnly = "ivan@ecenc.example"
    static let badCapabilities = "judy@badcaps.example"
    static let badKeyUsage = "ken@badku.example"

    /// SMIMECapabilities DER: SEQUENCE { SEQUENCE { aes256-CBC } }.
    static let capsCBC = "30:0D:30:0B:06:09:60:86:48:01:65:03:04:01:2A"
    /// SEQUENCE { SEQUENCE { aes256-GCM }, SEQUENCE { aes256-CBC } }.
    static let capsBoth = "30:1A:30:0B:06:09:60:86:48:01:65:03:04:01:2E:30:0B:06:09:60:86:48:01:65:03:04:01:2A"

    static let shared: Result<SMIMEFixtures, SMIMEFixtureError> = {
        do { return .success(try SMIMEFixtures()) } catch let e as SMIMEFixtureError {
            return .failure(e)
        } catch {
            return .failure(SMIMEFixtureError(description: "\(error)"))
        }
    }()

    static func get() throws -> SMIMEFixtures { try shared.get() }

    func party(_ address: String) -> Party {
        Party(address: address, certificate: "\(certificates)/\(address).pem", key: "\(root)/keys/\(address).key")
    }

    /// Removed when the test process exits.
    static let rootPath = NSTemporaryDirectory() + "relayd-smime-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"

    private init() throws {
        root = Self.rootPath
        atexit { try? FileManager.default.removeItem(atPath: SMIMEFixtures.rootPath) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: root + "/certs", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: root + "/keys", withIntermediateDirectories: true)
        let rsaKey = ["-newkey", "rsa:2048"]
        let ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        let encipher = "keyUsage=digitalSignature,keyEncipherment"
        try make(Self.rsa, rsaKey, [encipher])
        try make(Self.ec, ecKey, ["keyUsage=digitalSignature,keyAgreement"])
        try make(Self.cbcOnly, rsaKey, [encipher, "1.2.840.113549.1.9.15=DER:\(Self.capsCBC)"])
        try make(Self.gcmAndCBC, rsaKey, [encipher, "1.2.840.113549.1.9.15=DER:\(Self.capsBoth)"])
        try make(Self.smith, rsaKey, [encipher])
        try make(Self.signOnly, rsaKey, ["keyUsage=digitalSignature"])
        try make(Self.ecEncipherOnly, ecKey, [encipher])
        // An OCTET STRING where the SEQUENCE OF capabilities belongs.
        try make(Self.badCapabilities, rsaKey, [encipher, "1.2.840.113549.1.9.15=DER:04:01:00"])
        // A BOOLEAN where the keyUsage BIT STRING belongs.
        try make(Self.badKeyUsage, rsaKey, ["keyUsage=DER:01:01:FF"])
        try Array("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n".utf8)
            .write(to: "\(certificates)/\(Self.garbage).pem")
    }

    private func make(_ address: String, _ key: [String], _ extensions: [String]) throws {
        let p = party(address)
        let args = ["req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=\(address)", "-keyout", p.key, "-out", p.certificate]
            + key + extensions.flatMap { ["-addext", $0] }
        let (status, _) = try openssl(args)
        guard status == 0 else { throw SMIMEFixtureError(description: "openssl req for \(address) exited \(status)") }
    }

    /// Writes `bytes` to a new file under the fixture root; its path.
    func file(_ bytes: [UInt8]) throws -> String {
        let path = "\(root)/msg-\(UUID().uuidString)"
        try bytes.write(to: path)
        return path
    }

    /// What `openssl cms -decrypt` makes of an encrypted message for `party`;
    /// nil when it fails.
    func decrypt(_ message: [UInt8], as party: Party) throws -> [UInt8]? {
        let input = try file(message)
        let output = input + ".out"
        defer {
            try? FileManager.default.removeItem(atPath: input)
            try? FileManager.default.removeItem(atPath: output)
        }
        let (status, _) = try openssl(["cms", "-decrypt", "-binary", "-in", input, "-recip", party.certificate,
                                       "-inkey", party.key, "-out", output])
        guard status == 0 else { return nil }
        return Array(try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    /// `openssl cms -cmsout -print` of an encrypted message.
    func printed(_ message: [UInt8]) throws -> String {
        let input = try file(message)
        defer { try? FileManager.default.removeItem(atPath: input) }
        let (status, out) = try openssl(["cms", "-cmsout", "-print", "-in", input])
        guard status == 0 else { throw SMIMEFixtureError(description: "openssl cms -print exited \(status)") }
        return String(decoding: out, as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    func write(to path: String) throws {
        try Data(self).write(to: URL(fileURLWithPath: path))
    }
}
