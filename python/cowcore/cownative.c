/* cownative: the real kernel doing the fork/COW patterns that benches/ times on the simulator.
 *
 * Usage: cownative MIB [thp]
 * Maps MIB MiB of private anonymous memory (4K pages: MADV_NOHUGEPAGE; with "thp":
 * MADV_HUGEPAGE, which gives PMD THPs where /sys/kernel/mm/transparent_hugepage/enabled is
 * "madvise" or "always"), and prints one JSON object of nanoseconds per 4 KiB page:
 *   first_write  write fault on untouched memory (allocate + zero + map)
 *   fork         fork() as seen by the parent (copy_page_range of every mapped page)
 *   exit         the child's exit + the parent's waitpid (zap of every page)
 *   reuse        write after fork once the child has exited (do_wp_page reuses the page)
 *   copy         write after fork while the child still maps the memory (wp_page_copy)
 * Each figure is the best of ROUNDS rounds of this process's CPU time (user + system,
 * CLOCK_PROCESS_CPUTIME_ID: the kernel's fork and fault work runs in the process's context),
 * so that other load on a shared machine does not count. "exit" is the child's work and is
 * not in this process's CPU time: it is printed for completeness only. Built with gcc by
 * cowcore.bench (`cowcore bench`, benches/test_bench_api.py).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define ROUNDS 3

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static void touch(volatile char *p, size_t len, char v) {
	for (size_t o = 0; o < len; o += PAGE)
		p[o] = v;
}

static char *map(size_t len, int thp) {
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return p;
}

static double min(double a, double b) { return a < b ? a : b; }

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: cownative MIB [thp]\n");
		return 2;
	}
	size_t len = strtoul(argv[1], NULL, 10) << 20;
	int thp = argc > 2 && strcmp(argv[2], "thp") == 0;
	double pages = (double)(len / PAGE);
	double first = 1e30, fk = 1e30, ex = 1e30, reuse = 1e30, copy = 1e30;
	for (int r = 0; r < ROUNDS; r++) {
		char *p = map(len, thp);
		double t0 = now();
		touch(p, len, 1);
		first = min(first, now() - t0);

		/* fork, child exits at once; then every write reuses */
		t0 = now();
		pid_t c = fork();
		if (c == 0)
			_exit(0);
		double t1 = now();
		waitpid(c, NULL, 0);
		double t2 = now();
		fk = min(fk, t1 - t0);
		ex = min(ex, t2 - t1);
		t0 = now();
		touch(p, len, 2);
		reuse = min(reuse, now() - t0);

		/* fork, child waits on a pipe while the parent writes: every write copies */
		int fds[2];
		if (pipe(fds))
			return 1;
		c = fork();
		if (c == 0) {
			char b;
			close(fds[1]);
			if (read(fds[0], &b, 1) < 0)
				_exit(1);
			_exit(0);
		}
		close(fds[0]);
		t0 = now();
		touch(p, len, 3);
		copy = min(copy, now() - t0);
		close(fds[1]);
		waitpid(c, NULL, 0);
		munmap(p, len);
	}
	printf("{\"mib\": %zu, \"thp\": %s, \"first_write\": %.2f, \"fork\": %.2f, \"exit\": %.2f, "
	       "\"reuse\": %.2f, \"copy\": %.2f}\n",
	       len >> 20, thp ? "true" : "false", first / pages, fk / pages, ex / pages,
	       reuse / pages, copy / pages);
	return 0;
}
