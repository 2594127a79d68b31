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
/// getxattr(2) of a path into `buf`; returns the value's length or -1 with errno set.
long cshim_getxattr(const char *path, const char *name, void *buf, unsigned long size);
/// Starts `path` with `argv` (NULL-terminated) as a child placed in the cgroup `cgroup_fd` (an O_DIRECTORY fd of the
/// cgroup) before it runs a single instruction of its own: clone3(CLONE_INTO_CGROUP) on Linux 5.7+, else a fork whose
/// child writes itself into `procs_fd` (that cgroup's cgroup.procs, opened O_WRONLY) before exec. In the child, the
/// signal mask and dispositions are reset, PR_SET_PDEATHSIG(SIGKILL) is set, so it dies with the thread that
/// started it, and the bounding/ambient/inheritable capability sets are emptied with no_new_privs, so the program it
/// executes has no capability even as uid 0; every fd above 2 is closed before exec. Returns the pid or -1 with errno set; `*used_clone3` tells which way was taken.
pid_t cshim_spawn_in_cgroup(const char *path, char *const argv[], int cgroup_fd, int procs_fd, int *used_clone3);
/// fallocate(2) mode 0 (allocate, extend the size); 0 or -1 with errno set.
int cshim_fallocate(int fd, long long offset, long long length);

/// statfs(2)'s f_type (the file system's magic number) of `path` into *type; 0 or -1 with errno set.
int cshim_statfs_type(const char *path, long long *type);
/// prctl(PR_SET_NO_NEW_PRIVS, 1): 0 or -1 with errno set.
int cshim_no_new_privs(void);
/// fork + exec of `path` with `argv` as a process of its own (own process group, so a terminal's Ctrl-C does not reach
/// it; default signal dispositions and an empty mask), `stdin_fd` as its standard input, every fd above 2 closed. Only
/// async-signal-safe calls between fork and exec. Returns the pid or -1 with errno set.
pid_t cshim_spawn_detached(const char *path, char *const argv[], int stdin_fd);
/// getrlimit(RLIMIT_NOFILE): 0 or -1 with errno set.
int cshim_get_nofile(unsigned long long *soft, unsigned long long *hard);
/// setrlimit(RLIMIT_NOFILE): 0 or -1 with errno set (EPERM: raising the hard limit needs CAP_SYS_RESOURCE).
int cshim_set_nofile(unsigned long long soft, unsigned long long hard);
