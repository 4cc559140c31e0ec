#define _GNU_SOURCE
#include <unistd.h>
#include "CSyncFS.h"

int relayd_syncfs(int fd) { return syncfs(fd); }
