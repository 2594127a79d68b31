#define _GNU_SOURCE
#include "CShims.h"
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

int cshim_pidfd_open(pid_t pid, unsigned int flags) {
    return (int)syscall(SYS_pidfd_open, pid, flags);
}

int cshim_pidfd_send_signal(int pidfd, int sig) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, (void *)0, 0u);
}

int cshim_peercred(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

long cshim_clock_ticks(void) { return sysconf(_SC_CLK_TCK); }

#include <sys/vfs.h>
long long cshim_fs_type(const char *path) {
    struct statfs s;
    if (statfs(path, &s) != 0) return -1;
    return (long long)s.f_type;
}

#include <sched.h>
int cshim_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }
int cshim_unshare_net(void) { return unshare(CLONE_NEWNET); }

#include <sys/xattr.h>
long cshim_getxattr(const char *path, const char *name, void *buf, unsigned long size) {
    return (long)getxattr(path, name, buf, size);
}

#include <linux/sched.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>
#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

struct cshim_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};

#include <linux/capability.h>
/* Empties the bounding, ambient and inheritable sets: after execve even uid 0 starts with no capability at all, in
 * every thread. Raw syscalls only (async-signal-safe between clone and exec). */
static void child_drop_caps(void) {
    for (int c = 0; c < 64; c++) prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) == 0) {
        d[0].inheritable = d[1].inheritable = 0;
        syscall(SYS_capset, &h, d);
    }
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* Runs in the child only: async-signal-safe calls, then exec. */
static void child_exec(const char *path, char *const argv[], pid_t parent) {
    sigset_t none;
    sigemptyset(&none);
    for (int s = 1; s < 32; s++) {
        if (s != SIGKILL && s != SIGSTOP) signal(s, SIG_DFL);
    }
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(70); /* the parent died before PDEATHSIG was armed */
    child_drop_caps();
    /* Nothing of the agent's (sockets, journal, lock) reaches the worker, even an fd someone forgot to mark CLOEXEC. */
    if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
        for (int fd = 3; fd < 4096; fd++) close(fd);
    }
    execv(path, argv);
    _exit(127);
}

pid_t cshim_spawn_in_cgroup(const char *path, char *const argv[], int cgroup_fd, int procs_fd, int *used_clone3) {
    pid_t parent = getpid();
    struct cshim_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = (uint64_t)cgroup_fd;
    long r = syscall(SYS_clone3, &args, sizeof args);
    if (r == 0) child_exec(path, argv, parent);
    if (r > 0) {
        *used_clone3 = 1;
        return (pid_t)r;
    }
    if (errno != ENOSYS && errno != E2BIG && errno != EINVAL) return -1;
    *used_clone3 = 0;
    pid_t pid = fork();
    if (pid == 0) {
        if (write(procs_fd, "0", 1) != 1) _exit(71); /* never run outside the cgroup */
        child_exec(path, argv, parent);
    }
    return pid;
}

#include <fcntl.h>
int cshim_fallocate(int fd, long long offset, long long length) { return fallocate(fd, 0, (off_t)offset, (off_t)length); }

int cshim_statfs_type(const char *path, long long *type) {
    struct statfs s;
    if (statfs(path, &s) != 0) return -1;
    *type = (long long)s.f_type;
    return 0;
}

int cshim_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }

pid_t cshim_spawn_detached(const char *path, char *const argv[], int stdin_fd) {
    pid_t pid = fork();
    if (pid != 0) return pid;
    sigset_t none;
    sigemptyset(&none);
    for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setpgid(0, 0);
    if (stdin_fd != 0) {
        if (dup2(stdin_fd, 0) < 0) _exit(126);
    }
    if (syscall(SYS_close_range, 3U, ~0U, 0U) != 0) {
        for (int fd = 3; fd < 65536; fd++) close(fd);
    }
    execv(path, argv);
    _exit(127);
}

#include <sys/resource.h>

int cshim_get_nofile(unsigned long long *soft, unsigned long long *hard) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
    *soft = (unsigned long long)rl.rlim_cur;
    *hard = (unsigned long long)rl.rlim_max;
    return 0;
}

int cshim_set_nofile(unsigned long long soft, unsigned long long hard) {
    struct rlimit rl = {.rlim_cur = (rlim_t)soft, .rlim_max = (rlim_t)hard};
    return setrlimit(RLIMIT_NOFILE, &rl);
}
