/* crypt_r(3) from libxcrypt (Debian's libcrypt-dev): yescrypt, SHA-512-crypt.
 * Only RelayCore/Auth imports this module. */
#include <crypt.h>
