/* cownative: the real kernel doing the fork/COW patterns that benches/ times on the simulator.
 *
 * Usage: cownative MIB [thp] [calibrate] [rounds=N]
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
 *
 * With "calibrate" (`cowcore calibrate`, cowcore.cost): the total nanoseconds of each phase
 * (not per page), each the best of ROUNDS, for cowcore.cost to divide by the events the
 * simulator reports for the same pattern:
 *   fork_base    fork() of this process before the region is mapped (the fixed cost)
 *   read_fault   4K only: a read of every untouched page (maps the shared zero page)
 *   zero_cow     4K only: then a write of every page (copies the zero page: a new page, zeroed)
 *   first_write  write of every untouched page; then, on the same memory:
 *   mprotect     mprotect(PROT_READ) of the whole region
 *   munmap       munmap of the whole region (zap, free every page)
 *   fork         on a second region, written: the parent's fork()
 *   reuse        write of every page once that child has exited
 *   store        write of every page again (no fault: the stores' own cost, cache misses)
 *   copy         write of every page while a second child still maps them
 * and "thp_kib", the AnonHugePages of the process once the first region is written (whether
 * the kernel gave PMD THPs), "pages", "mib" and "thp". With "thp" the regions are 2 MiB
 * aligned and MADV_HUGEPAGE, and read_fault/zero_cow are not measured (0). "rounds=N"
 * replaces ROUNDS (both modes).
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

static int rounds = ROUNDS;

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

/* A 2 MiB aligned mapping of len bytes (over-map, trim both ends). */
static char *map_aligned(size_t len, int thp) {
	size_t huge = 2UL << 20;
	char *raw = mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	if (raw == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	char *p = (char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
	if (p > raw)
		munmap(raw, (size_t)(p - raw));
	if (p + len < raw + len + huge)
		munmap(p + len, (size_t)(raw + len + huge - (p + len)));
	madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	return p;
}

static void read_all(volatile char *p, size_t len) {
	char sum = 0;
	for (size_t o = 0; o < len; o += PAGE)
		sum += p[o];
	if (sum == 42)
		puts("");
}

/* AnonHugePages of this process, in KiB (0 if unknown). */
static long anon_huge_kib(void) {
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	long kib = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static double fork_exit(void) {
	double t0 = now();
	pid_t c = fork();
	if (c == 0)
		_exit(0);
	double t = now() - t0;
	waitpid(c, NULL, 0);
	return t;
}

static int calibrate(size_t len, int thp) {
	double fork_base = 1e30, readf = 1e30, zcow = 1e30, first = 1e30, mprot = 1e30;
	double unmap = 1e30, fk = 1e30, reuse = 1e30, copy = 1e30, store = 1e30;
	long thp_kib = 0;
	for (int r = 0; r < rounds; r++) {
		fork_base = min(fork_base, fork_exit());
		double t0;
		if (!thp) {
			char *z = map_aligned(len, thp);
			t0 = now();
			read_all(z, len);
			readf = min(readf, now() - t0);
			t0 = now();
			touch(z, len, 1);
			zcow = min(zcow, now() - t0);
			munmap(z, len);
		}
		char *q = map_aligned(len, thp);
		t0 = now();
		touch(q, len, 1);
		first = min(first, now() - t0);
		if (r == 0)
			thp_kib = anon_huge_kib();
		t0 = now();
		if (mprotect(q, len, PROT_READ)) {
			perror("mprotect");
			return 1;
		}
		mprot = min(mprot, now() - t0);
		t0 = now();
		munmap(q, len);
		unmap = min(unmap, now() - t0);

		char *p = map_aligned(len, thp);
		touch(p, len, 1);
		fk = min(fk, fork_exit());
		t0 = now();
		touch(p, len, 2);
		reuse = min(reuse, now() - t0);
		t0 = now();
		touch(p, len, 4);
		store = min(store, now() - t0);
		int fds[2];
		if (pipe(fds))
			return 1;
		pid_t c = fork();
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
	if (thp)
		readf = zcow = 0;
	printf("{\"mib\": %zu, \"thp\": %s, \"pages\": %zu, \"thp_kib\": %ld, \"fork_base\": %.0f, "
	       "\"read_fault\": %.0f, \"zero_cow\": %.0f, \"first_write\": %.0f, "
	       "\"mprotect\": %.0f, \"munmap\": %.0f, \"fork\": %.0f, \"reuse\": %.0f, "
	       "\"copy\": %.0f, \"store\": %.0f}\n",
	       len >> 20, thp ? "true" : "false", len / PAGE, thp_kib, fork_base, readf, zcow,
	       first, mprot, unmap, fk, reuse, copy, store);
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: cownative MIB [thp] [calibrate] [rounds=N]\n");
		return 2;
	}
	size_t len = strtoul(argv[1], NULL, 10) << 20;
	int thp = 0, cal = 0;
	for (int i = 2; i < argc; i++) {
		thp |= strcmp(argv[i], "thp") == 0;
		cal |= strcmp(argv[i], "calibrate") == 0;
		if (strncmp(argv[i], "rounds=", 7) == 0 && atoi(argv[i] + 7) > 0)
			rounds = atoi(argv[i] + 7);
	}
	if (cal)
		return calibrate(len, thp);
	double pages = (double)(len / PAGE);
	double first = 1e30, fk = 1e30, ex = 1e30, reuse = 1e30, copy = 1e30;
	for (int r = 0; r < rounds; r++) {
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
