/* snapshotnative: the snapshot workload (a Redis/Valkey BGSAVE) as a real program, so that
 * cowcore.native_snapshot can compare the child's Private_Dirty, as the kernel reports it in
 * /proc/self/smaps, with the simulator's for the same steps (tests/test_native_snapshot.py,
 * docs/workloads.md "Checked against the host's kernel").
 *
 * Usage: snapshotnative < PLAN
 * PLAN is text: "PAGES STEPS" (the heap's size in 4 KiB pages, the number of steps), then one
 * line per step: "LO HI N P1 .. PN": in that step the child reads heap pages [LO, HI), then
 * the parent writes one byte of each of the N pages P1 .. PN (in that order, repeats
 * allowed), then the child reads its smaps. cowcore.workloads.snapshot.steps() draws the plan.
 *
 * The heap is mapped 2 MiB aligned inside a larger PROT_NONE reservation (so that its VMA
 * never merges with another mapping and smaps has exactly one VMA starting at its address)
 * and madvise(MADV_NOHUGEPAGE)d: 4 KiB pages whatever the host's THP knobs say. The parent
 * writes every page and forks. In each step the child reads its pages (summing them, as a
 * serialiser would), the parent writes its pages, and the child prints one JSON line,
 * {"step": I, "end": E, "vma": {...}}: every "kB" line of the heap's VMA in its
 * /proc/self/smaps (as Redis's child reads Private_Dirty: zmalloc_get_private_dirty() in
 * src/zmalloc.c), and the VMA's end (0 if not found). The two processes take turns through
 * two pipes, so each reading sees exactly the writes of the steps before it and its own.
 * After the last step the child exits and the parent reaps it.
 *
 * Exit status 0, or 1 with a message on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define PMD (2UL << 20)

struct step {
	size_t lo, hi, n;
	size_t *pages;
};

static char *heap;

static void die(const char *what) {
	fprintf(stderr, "snapshotnative: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void bad_plan(const char *what) {
	fprintf(stderr, "snapshotnative: bad plan: %s\n", what);
	exit(1);
}

static size_t number(void) {
	unsigned long v;
	if (scanf("%lu", &v) != 1)
		bad_plan("expected a number");
	return v;
}

/* The child's reading: every "Name: N kB" line of the heap's VMA in /proc/self/smaps. */
static void reading(size_t step) {
	char line[512], key[64], unit[8];
	unsigned long start, end, value, found_end = 0;
	int in_vma = 0, first = 1;
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		die("open /proc/self/smaps");
	printf("{\"step\":%zu,\"vma\":{", step);
	while (fgets(line, sizeof line, f)) {
		/* A VMA's header ("start-end perms ..."); no "Key: N kB" line parses so. */
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
			in_vma = start == (unsigned long)(uintptr_t)heap;
			if (in_vma)
				found_end = end;
			continue;
		}
		if (in_vma && sscanf(line, "%63[^:]: %lu %7s", key, &value, unit) == 3 &&
		    strcmp(unit, "kB") == 0) {
			printf("%s\"%s\":%lu", first ? "" : ",", key, value);
			first = 0;
		}
	}
	fclose(f);
	printf("},\"end\":%lu}\n", found_end);
	fflush(stdout);
}

static void send(int fd) {
	char c = 'g';
	if (write(fd, &c, 1) != 1)
		die("pipe write");
}

static void recv_byte(int fd) {
	char c;
	if (read(fd, &c, 1) != 1)
		die("pipe read");
}

int main(int argc, char **argv) {
	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "usage: snapshotnative < PLAN (see the source)\n");
		return 1;
	}
	size_t npages = number(), nsteps = number();
	if (npages == 0 || npages > (SIZE_MAX - 4 * PMD) / PAGE)
		bad_plan("heap size");
	struct step *plan = calloc(nsteps ? nsteps : 1, sizeof *plan);
	if (!plan)
		die("calloc");
	for (size_t i = 0; i < nsteps; i++) {
		struct step *s = &plan[i];
		s->lo = number();
		s->hi = number();
		s->n = number();
		if (s->lo > s->hi || s->hi > npages)
			bad_plan("scan range");
		s->pages = malloc((s->n ? s->n : 1) * sizeof *s->pages);
		if (!s->pages)
			die("malloc");
		for (size_t k = 0; k < s->n; k++)
			if ((s->pages[k] = number()) >= npages)
				bad_plan("page index");
	}

	size_t len = npages * PAGE, reserve = len + 4 * PMD;
	char *base = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			  -1, 0);
	if (base == MAP_FAILED)
		die("mmap reservation");
	uintptr_t aligned = ((uintptr_t)base + 2 * PMD - 1) & ~(PMD - 1);
	heap = mmap((void *)aligned, len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (heap == MAP_FAILED)
		die("mmap heap");
	if (madvise(heap, len, MADV_NOHUGEPAGE))
		die("madvise(MADV_NOHUGEPAGE)");
	volatile char *h = heap;
	for (size_t i = 0; i < npages; i++)
		h[i * PAGE] = 1;

	int to_child[2], to_parent[2];
	if (pipe(to_child) || pipe(to_parent))
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		unsigned long sum = 0;
		for (size_t i = 0; i < nsteps; i++) {
			for (size_t p = plan[i].lo; p < plan[i].hi; p++)
				sum += (unsigned char)h[p * PAGE];
			send(to_parent[1]); /* scanned */
			recv_byte(to_child[0]); /* the parent wrote */
			reading(i);
		}
		_exit(sum == (unsigned long)-1); /* keeps the reads */
	}
	for (size_t i = 0; i < nsteps; i++) {
		recv_byte(to_parent[0]);
		for (size_t k = 0; k < plan[i].n; k++)
			h[plan[i].pages[k] * PAGE] = 2;
		send(to_child[1]);
	}
	int status;
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "snapshotnative: the child failed (status %d)\n", status);
		return 1;
	}
	return 0;
}
