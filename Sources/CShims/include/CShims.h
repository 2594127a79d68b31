#pragma once
#include <sys/types.h>
#include <stdint.h>

/// pidfd_open(2) via syscall(2); returns a file descriptor or -1 with errno set.
int cshim_pidfd_open(pid_t pid, unsigned int flags);
/// pidfd_send_signal(2) with siginfo NULL and flags 0; returns 0 or -1 with errno set.
int cshim_pidfd_send_signal(int pidfd, int sig);
/// SO_PEERCRED of a connected Unix socket; returns 0 or -1 with errno set.
int cshim_peercred(int fd, pid_t *pid, uid_t *uid, gid_t *gid);
/// Clock ticks per second (sysconf(_SC_CLK_TCK)).
long cshim_clock_ticks(void);
/// statfs(2) f_type of the file system holding `path`, or -1 with errno set.
long long cshim_fs_type(const char *path);
/// setns(fd, CLONE_NEWNET): moves the calling thread into the network namespace `fd` refers to; 0 or -1 with errno.
int cshim_setns_net(int fd);
/// unshare(CLONE_NEWNET): gives the calling thread a fresh network namespace; 0 or -1 with errno.
int cshim_unshare_net(void);
