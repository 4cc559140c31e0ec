// zlib (zlib1g-dev) for the gzip form of TLS-RPT reports (RFC 8460 §5.3).
// Imported only by RelayTLSRPT.
#include <zlib.h>
