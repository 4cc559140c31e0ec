// Small durable records beside the queue (a delivery state, a cached
// MTA-STS policy): one file per key in a folder under the spool, written
// as tmp/ file → fsync → rename → directory fsync, so a reader sees the old
// record or the new one, never a torn one. Each record ends in the same
// check line as a queue file ("end <FNV-1a 64 hex>"), so a record damaged
// on disk is recognised rather than half-trusted.
#if canImport(Glibc)
import Glibc
#endif
import RelayModel

public enum SpoolRecordError: Error, Equatable, Sendable {
    /// The file does not end in a check line that matches its content.
    case damaged
}

extension Spool {
    /// `root/<folder>`, created on first use.
    package func recordFolder(_ folder: String) throws -> String {
        let p = root + "/" + folder
        try Self.makeDirectory(p)
        return p
    }

    /// Replaces the record `name` in `folder` durably; `content` gets the
    /// check line appended.
    package func writeRecord(_ folder: String, _ name: String, _ content: [UInt8]) throws {
        let dir = try recordFolder(folder)
        let tmp = path(.tmp, "\(folder).\(name).\(getpid())")
        do {
            try writeFile(tmp, Self.sealed(content), replacing: true)
            try rename(tmp, to: dir + "/" + name)
            try syncDirectory(dir)
        } catch {
            _ = unlinkPath(tmp)
            throw error
        }
    }

    /// The record's content without its check line; nil when there is no
    /// record; `SpoolRecordError.damaged` when the check fails.
    package func readRecord(_ folder: String, _ name: String) throws -> [UInt8]? {
        guard let data = try readFileIfExists(root + "/" + folder + "/" + name) else { return nil }
        guard let content = Self.unsealed(data) else { throw SpoolRecordError.damaged }
        return content
    }

    /// Record names in `folder`, sorted; none when the folder does not exist.
    package func recordNames(_ folder: String) -> [String] {
        guard let dir = opendir(root + "/" + folder) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." || name.contains(".damaged-") { continue }
            names.append(name)
        }
        return names.sorted()
    }

    /// Removes a record durably; false when there was none.
    @discardableResult
    package func removeRecord(_ folder: String, _ name: String) throws -> Bool {
        let dir = root + "/" + folder
        guard unlinkPath(dir + "/" + name) else {
            if errno == ENOENT { return false }
            throw SystemError("unlink \(dir)/\(name)")
        }
        try syncDirectory(dir)
        return true
    }

    /// Moves a damaged record out of the way (kept for a post-mortem as
    /// `<name>.damaged-<time>`); returns the new name.
    @discardableResult
    package func setRecordAside(_ folder: String, _ name: String, now: Int) throws -> String {
        let dir = root + "/" + folder
        let aside = "\(name).damaged-\(now)"
        try rename(dir + "/" + name, to: dir + "/" + aside)
        try syncDirectory(dir)
        return aside
    }

    static func sealed(_ content: [UInt8]) -> [UInt8] {
        content + Array("end \(QueueFile.hex16(QueueFile.fnv1a64(content[...])))\n".utf8)
    }

    static func unsealed(_ data: [UInt8]) -> [UInt8]? {
        let checkLength = 4 + 16 + 1
        guard data.count >= checkLength, data.last == 10 else { return nil }
        let content = Array(data[..<(data.count - checkLength)])
        let check = String(decoding: data[(data.count - checkLength)..<(data.count - 1)], as: UTF8.self)
        guard check == "end " + QueueFile.hex16(QueueFile.fnv1a64(content[...])) else { return nil }
        return content
    }
}
