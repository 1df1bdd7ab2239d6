/* Preloaded into tslice-broker by the tests: a kernel older than 6.5, which
 * has no SO_PEERPIDFD (the broker falls back to pidfd_open of the pid that
 * SO_PEERCRED gives, which must then be checked against pid reuse). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>

#define SO_PEERPIDFD_ 77

int getsockopt(int fd, int level, int name, void *val, socklen_t *len) {
    static int (*real)(int, int, int, void *, socklen_t *);
    if (level == SOL_SOCKET && name == SO_PEERPIDFD_) {
        errno = ENOPROTOOPT;
        return -1;
    }
    if (!real)
        real = (int (*)(int, int, int, void *, socklen_t *))dlsym(RTLD_NEXT, "getsockopt");
    return real(fd, level, name, val, len);
}
