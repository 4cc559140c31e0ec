// c-ares process-wide state: versions and library initialisation.
// RelayCore/DNS is the only importer of CAres; the channel itself is
// CAresResolver (Resolver.swift), driven from one serial queue since
// c-ares 1.18 is not thread-safe.
import CAres

public enum CAresLibrary {
    /// The version of the c-ares library linked at run time.
    public static var runtimeVersion: String { String(cString: ares_version(nil)) }

    /// The version of the headers relayd was compiled against.
    public static var headerVersion: String { String(cString: relayd_ares_header_version()) }

    /// Must run once before any channel is created (required on some
    /// platforms, harmless everywhere).
    public static func initialize() -> Bool {
        ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS
    }
}
