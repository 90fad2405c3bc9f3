// rp-make-it-fail.so: LD_PRELOAD it into a program to put that process under
// the kernel's fault-injection task filter from its first instruction after
// the dynamic loader: it writes 1 to /proc/self/make-it-fail. With failslab's
// (or fail_page_alloc's) task-filter=Y only this process's kernel allocations
// can then fail; the fork and exec that started it are not affected, so the
// program runs and its system calls (e.g. a generic netlink request, handled
// in the sender's context) meet the injected failures. Debug kernel only
// (tests/vm/debug-kernel.sh: CONFIG_FAULT_INJECTION_DEBUG_FS).
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((constructor)) static void rp_make_it_fail(void)
{
	int fd = open("/proc/self/make-it-fail", O_WRONLY | O_CLOEXEC);

	if (fd < 0 || write(fd, "1", 1) != 1) {
		perror("rp-make-it-fail: /proc/self/make-it-fail");
		_exit(125);
	}
	close(fd);
}
