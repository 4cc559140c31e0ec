// Typed, diagnosing access to a parsed TOML table. Each accessor records the
// key as known; `finish` reports every key nobody asked for, so a typo such
// as `defualt_level` is an error and not a silently ignored setting.
import TOMLKit

final class ConfigDiagnostics {
    let file: String
    let locator: TOMLKeyLocator
    private(set) var errors: [ConfigError] = []

    init(file: String, locator: TOMLKeyLocator) {
        self.file = file
        self.locator = locator
    }

    func report(_ path: String, _ message: String) {
        errors.append(ConfigError(file: file, line: locator.line(for: path), key: path, message: message))
    }

    func reportFile(line: Int?, _ message: String) {
        errors.append(ConfigError(file: file, line: line, key: nil, message: message))
    }
}

struct ConfigReader {
    let table: TOMLTable
    let path: String
    let diagnostics: ConfigDiagnostics
    private let known: Box

    private final class Box { var keys = Set<String>() }

    init(table: TOMLTable, path: String, diagnostics: ConfigDiagnostics) {
        self.table = table
        self.path = path
        self.diagnostics = diagnostics
        self.known = Box()
    }

    func keyPath(_ key: String) -> String {
        let k = key.contains(".") ? "\"\(key)\"" : key
        return path.isEmpty ? k : "\(path).\(k)"
    }

    private func value(_ key: String) -> (any TOMLValueConvertible)? {
        known.keys.insert(key)
        guard table.contains(key: key) else { return nil }
        let v: (any TOMLValueConvertible)? = table[key]
        return v
    }

    private func typeError(_ key: String, expected: String, got: any TOMLValueConvertible) {
        diagnostics.report(keyPath(key), "expected \(expected), found \(Self.describe(got.type))")
    }

    static func describe(_ type: TOMLType) -> String {
        switch type {
        case .string: return "a string"
        case .int: return "an integer"
        case .double: return "a floating-point number"
        case .bool: return "a boolean"
        case .array: return "an array"
        case .table: return "a table"
        case .date, .time, .dateTime: return "a date/time"
        }
    }

    func string(_ key: String) -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.string else { typeError(key, expected: "a string", got: v); return nil }
        return s
    }

    func string(_ key: String, default d: String) -> String { string(key) ?? d }

    func int(_ key: String) -> Int? {
        guard let v = value(key) else { return nil }
        guard let i = v.int else { typeError(key, expected: "an integer", got: v); return nil }
        return i
    }

    func bool(_ key: String) -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.bool else { typeError(key, expected: "true or false", got: v); return nil }
        return b
    }

    func stringArray(_ key: String) -> [String]? {
        guard let v = value(key) else { return nil }
        guard let a = v.array else { typeError(key, expected: "an array of strings", got: v); return nil }
        var out: [String] = []
        for (i, element) in a.enumerated() {
            guard let s = element.string else {
                diagnostics.report(keyPath(key), "element \(i + 1): expected a string, found \(Self.describe(element.type))")
                continue
            }
            out.append(s)
        }
        return out
    }

    /// Either a string or an integer number of seconds.
    func raw(_ key: String) -> (any TOMLValueConvertible)? { value(key) }

    func subtable(_ key: String) -> ConfigReader? {
        guard let v = value(key) else { return nil }
        guard let t = v.table else { typeError(key, expected: "a table", got: v); return nil }
        return ConfigReader(table: t, path: keyPath(key), diagnostics: diagnostics)
    }

    func tableArray(_ key: String) -> [ConfigReader]? {
        guard let v = value(key) else { return nil }
        guard let a = v.array else { typeError(key, expected: "an array of tables ([[\(key)]])", got: v); return nil }
        var out: [ConfigReader] = []
        for (i, element) in a.enumerated() {
            guard let t = element.table else {
                diagnostics.report("\(keyPath(key))[\(i)]", "expected a table, found \(Self.describe(element.type))")
                continue
            }
            out.append(ConfigReader(table: t, path: "\(keyPath(key))[\(i)]", diagnostics: diagnostics))
        }
        return out
    }

    /// Every key of this table, for tables whose keys are data (domains).
    var allKeys: [String] { table.keys }

    func markAllKnown() { known.keys.formUnion(table.keys) }

    /// Reports keys present in the file that no accessor asked for.
    func finish() {
        for key in table.keys where !known.keys.contains(key) {
            let choices = known.keys.sorted().joined(separator: ", ")
            diagnostics.report(keyPath(key), "unknown key (known here: \(choices))")
        }
    }
}
