/* smapsnative: a real program that maps, writes, forks and writes again, printing what
 * /proc/self/smaps and /proc/self/smaps_rollup say after each step, so that
 * cowcore.native_smaps can compare the kernel's accounting with the simulator running the
 * same pattern (tests/test_native_smaps.py, docs/accounting.md "Checked against a real kernel
 * on the host").
 *
 * Usage: smapsnative KIB ADVICE CHILD_FIRST CHILD_PAGES PARENT_FIRST PARENT_PAGES
 *   KIB      the region's size in KiB (a multiple of 4)
 *   ADVICE   "none", "hugepage" (MADV_HUGEPAGE) or "nohugepage" (MADV_NOHUGEPAGE)
 *   the child writes pages [CHILD_FIRST, CHILD_FIRST + CHILD_PAGES) of the region, then the
 *   parent writes pages [PARENT_FIRST, PARENT_FIRST + PARENT_PAGES) (4 KiB page indices).
 *
 * The region is mapped 2 MiB aligned (as the simulator's mmap places it, and as a PMD THP
 * needs) inside a larger PROT_NONE reservation, so that its VMA never merges with another
 * anonymous mapping: smaps then has exactly one VMA starting at the region's address.
 * Steps, and the snapshot taken after each (one JSON line on stdout per process and step):
 *   written       the parent wrote every page                       (parent)
 *   child_wrote   fork(); the child wrote its pages                 (parent, child)
 *   parent_wrote  then the parent wrote its pages, the child alive  (parent, child)
 *   child_exited  the child exited and was reaped                   (parent)
 * A snapshot is {"step": S, "who": "parent"|"child", "start": A, "end": E, "vma": {...},
 * "rollup": {...}}: every "kB" line of the region's VMA in /proc/self/smaps, and every "kB"
 * line of /proc/self/smaps_rollup (which also counts the program's other mappings: libc,
 * stack, heap; which is why the comparison is per VMA). "end" is the VMA's end as smaps
 * prints it (0 if the VMA was not found). The two processes take turns through two pipes, so
 * each snapshot sees the state its step describes.
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

static char *region;
static size_t region_len;

static void die(const char *what) {
	fprintf(stderr, "smapsnative: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Print every "Name:  N kB" line of an smaps-style block as JSON members. */
static void print_kb_line(const char *line, int *first) {
	char key[64];
	unsigned long value;
	char unit[8];
	if (sscanf(line, "%63[^:]: %lu %7s", key, &value, unit) == 3 && strcmp(unit, "kB") == 0) {
		printf("%s\"%s\":%lu", *first ? "" : ",", key, value);
		*first = 0;
	}
}

/* One snapshot line: the region's VMA from /proc/self/smaps, and /proc/self/smaps_rollup. */
static void snapshot(const char *step, const char *who) {
	char line[512];
	unsigned long start, end, found_end = 0;
	int in_vma = 0, first = 1;
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		die("open /proc/self/smaps");
	printf("{\"step\":\"%s\",\"who\":\"%s\",\"start\":%lu,\"vma\":{", step, who,
	       (unsigned long)(uintptr_t)region);
	while (fgets(line, sizeof line, f)) {
		/* A VMA's header ("start-end perms ..."); no "Key: N kB" line parses so. */
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
			in_vma = start == (unsigned long)(uintptr_t)region;
			if (in_vma)
				found_end = end;
			continue;
		}
		if (in_vma)
			print_kb_line(line, &first);
	}
	fclose(f);
	printf("},\"end\":%lu,\"rollup\":{", found_end);
	f = fopen("/proc/self/smaps_rollup", "r");
	if (!f)
		die("open /proc/self/smaps_rollup");
	first = 1;
	while (fgets(line, sizeof line, f))
		print_kb_line(line, &first);
	fclose(f);
	printf("}}\n");
	fflush(stdout);
}

static void touch(size_t first, size_t pages) {
	volatile char *p = region;
	for (size_t i = first; i < first + pages; i++)
		p[i * PAGE] = 1;
}

static void send(int fd, char c) {
	if (write(fd, &c, 1) != 1)
		die("pipe write");
}

static char recv_byte(int fd) {
	char c;
	if (read(fd, &c, 1) != 1)
		die("pipe read");
	return c;
}

static size_t arg(const char *s) {
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (*s == '\0' || *end != '\0') {
		fprintf(stderr, "smapsnative: not a number: %s\n", s);
		exit(1);
	}
	return v;
}

int main(int argc, char **argv) {
	if (argc != 7) {
		fprintf(stderr, "usage: smapsnative KIB none|hugepage|nohugepage CHILD_FIRST "
				"CHILD_PAGES PARENT_FIRST PARENT_PAGES\n");
		return 1;
	}
	size_t kib = arg(argv[1]);
	const char *advice = argv[2];
	size_t c_first = arg(argv[3]), c_pages = arg(argv[4]);
	size_t p_first = arg(argv[5]), p_pages = arg(argv[6]);
	region_len = kib * 1024;
	size_t pages = region_len / PAGE;
	if (kib == 0 || kib % 4 || c_first + c_pages > pages || p_first + p_pages > pages) {
		fprintf(stderr, "smapsnative: bad size or page range\n");
		return 1;
	}
	/* A PROT_NONE reservation with 2 MiB to spare on each side; the region in its middle. */
	size_t reserve = region_len + 4 * PMD;
	char *base = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			  -1, 0);
	if (base == MAP_FAILED)
		die("mmap reservation");
	uintptr_t aligned = ((uintptr_t)base + 2 * PMD - 1) & ~(PMD - 1);
	region = mmap((void *)aligned, region_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (region == MAP_FAILED)
		die("mmap region");
	if (strcmp(advice, "hugepage") == 0) {
		if (madvise(region, region_len, MADV_HUGEPAGE))
			die("madvise(MADV_HUGEPAGE)");
	} else if (strcmp(advice, "nohugepage") == 0) {
		if (madvise(region, region_len, MADV_NOHUGEPAGE))
			die("madvise(MADV_NOHUGEPAGE)");
	} else if (strcmp(advice, "none") != 0) {
		fprintf(stderr, "smapsnative: unknown advice %s\n", advice);
		return 1;
	}
	touch(0, pages);
	snapshot("written", "parent");

	int to_child[2], to_parent[2];
	if (pipe(to_child) || pipe(to_parent))
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		touch(c_first, c_pages);
		send(to_parent[1], 'w');
		/* Each 's' asks for a snapshot of the step the parent names by count. */
		static const char *const steps[] = {"child_wrote", "parent_wrote"};
		for (int i = 0; recv_byte(to_child[0]) == 's' && i < 2; i++) {
			snapshot(steps[i], "child");
			send(to_parent[1], 'd');
		}
		_exit(0);
	}
	recv_byte(to_parent[0]);
	snapshot("child_wrote", "parent");
	send(to_child[1], 's');
	recv_byte(to_parent[0]);
	touch(p_first, p_pages);
	snapshot("parent_wrote", "parent");
	send(to_child[1], 's');
	recv_byte(to_parent[0]);
	send(to_child[1], 'x');
	int status;
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "smapsnative: the child failed (status %d)\n", status);
		return 1;
	}
	snapshot("child_exited", "parent");
	return 0;
}
