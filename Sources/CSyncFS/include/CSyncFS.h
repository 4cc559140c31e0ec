// syncfs(2) for the spool (Queue/Spool.swift). Glibc declares it only under
// _GNU_SOURCE, which Swift's Glibc module is not built with, so it is
// wrapped here in a file that defines it.
#pragma once

/// syncfs(2) on the filesystem holding `fd`: 0, or -1 with errno set.
int relayd_syncfs(int fd);
