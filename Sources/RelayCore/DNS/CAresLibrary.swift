// c-ares process-wide state. RelayCore/DNS is the only importer of CAres;
// a resolver channel (issue: outbound delivery) will live beside this file
// and be driven from one serial queue, since c-ares 1.18 is not thread-safe.
import CAres

public enum CAresLibrary {
    /// The version of the c-ares library linked at run time.
    public static var runtimeVersion: String { String(cString: ares_version(nil)) }

    /// The version of the headers relayd was compiled against.
    public static var headerVersion: String { String(cString: relayd_ares_header_version()) }

    /// (major, minor, patch) of the runtime library.
    public static var runtimeVersionTuple: (Int, Int, Int) {
        var number: Int32 = 0
        _ = ares_version(&number)
        return (Int(number >> 16) & 0xff, Int(number >> 8) & 0xff, Int(number) & 0xff)
    }

    /// Must run once before any channel is created (required on some
    /// platforms, harmless everywhere).
    public static func initialize() -> Bool {
        ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS
    }
}
