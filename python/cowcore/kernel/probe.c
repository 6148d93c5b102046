/*
 * cowcore kernel probe: runs as /init in a QEMU guest and plays `.cow` scenarios on the real
 * kernel, printing the observations of docs/scenario-format.md to /dev/ttyS1.
 *
 * The Python runner (python/cowcore/kernel/runner.py) parses and syntax-checks the scenarios
 * and compiles them into a simple line format (/scenarios in the initramfs):
 *
 *   S IDX                      a scenario begins (IDX echoed back as {"begin":IDX})
 *   P IDX NAME                 process IDX is called NAME (process 0 exists from the start)
 *   M IDX NAME                 mapping IDX is called NAME
 *   K LINE FILE VALUE          write VALUE to /sys/kernel/mm/transparent_hugepage/FILE
 *   X LINE                     stats
 *   D LINE                     drop_caches (write 2 to /proc/sys/vm/drop_caches)
 *   C LINE PROC VERB ARGS...   a process statement, names replaced by indices, sizes in bytes:
 *                              mmap MAP LEN | munmap MAP OFF LEN | mprotect MAP OFF LEN r|rw|none
 *                              madvise MAP OFF LEN ADVICE | write MAP OFF LEN VALUE
 *                              read MAP OFF LEN | observe MAP OFF LEN | smaps MAP
 *                              fork CHILD | exit | mremap MAP OFF LEN NEWMAP
 *                              ref MAP OFF LEN | unref MAP OFF LEN | pin MAP OFF LEN
 *                              unpin MAP OFF LEN | unshare MAP OFF LEN | pageout MAP OFF LEN
 *                              collapse MAP OFF LEN
 *   Z                          the scenario ends ({"end":IDX})
 *
 * Architecture: this process (the controller, PID 1) owns all the bookkeeping: which process
 * exists, where each mapping lives and which of its pages are mapped with which protection
 * (needed to report run-time errors *before* applying a statement, as the format requires),
 * the frame names, and the counters. Every scenario process is a real process (a "worker")
 * running a command loop fed over a pipe; `fork` really forks the worker, `exit` really exits
 * and the controller waits for it (pidfd) so the address space is torn down before the next
 * statement. Observations are read by the controller from /proc/<pid>/pagemap, /proc/<pid>/mem,
 * /proc/kpageflags, /proc/kpagecount and /proc/<pid>/smaps.
 *
 * Determinism rules (see also runner.py): every buffer this program uses is static and touched
 * before the first scenario sets a THP knob, so that the probe itself never takes a fault that
 * could allocate a large folio or bump a THP counter while a scenario runs; the probe never
 * calls malloc or stdio after start-up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define PAGE_SIZE 4096ULL
#define PMD_SIZE (2ULL << 20)
#define MAX_MAPPING (1ULL << 30) /* the format's limit: a mapping over 1G is an error */
#define MAXPROC 64
#define MAXMAP 64
#define NAMELEN 64
#define STATE_POOL (24u << 20)  /* per-page state bytes of all mappings of one scenario */
#define NAME_SLOTS (1u << 19)   /* frame-name hash table (open addressing) */
#define INPUT_MAX (8u << 20)
#define THP "/sys/kernel/mm/transparent_hugepage/"
#define MAXHOLD 64            /* refs and pins one process holds at a time */
#define MAXHELD 4096          /* file descriptors a worker keeps for its refs and pins */
#define REF_PIPE_PAGES 256    /* pages of one vmsplice pipe (1M: a small kcalloc) */
#define MAX_RANGE_PAGES (MAX_MAPPING / PAGE_SIZE)
#define PVM_BUF (1u << 20)    /* local buffer of `unshare`, reused for every 1M of the range */

/* /proc/<pid>/pagemap bits (Documentation/admin-guide/mm/pagemap.rst, fs/proc/task_mmu.c). */
#define PM_PRESENT (1ULL << 63)
#define PM_SWAP (1ULL << 62)
#define PM_MMAP_EXCLUSIVE (1ULL << 56)
#define PM_PFN_MASK ((1ULL << 55) - 1)
/* /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h, fs/proc/page.c). */
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define KPF_THP 22
#define KPF_ZERO_PAGE 24

/* Per-page state kept by the controller for every mapping (prot in the low two bits). */
#define ST_UNMAPPED 0
#define ST_NONE 1
#define ST_R 2
#define ST_RW 3
#define ST_PROT 3
#define ST_DONTFORK 4

/* The mTHP sizes of the format, smallest first (hugepages-<kB>kB in sysfs). */
static const unsigned size_kb[] = {16, 32, 64, 128, 256, 512, 1024, 2048};
static const char *const size_name[] = {"16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M"};
#define NSIZES 8
static const char *const stat_name[] = {"anon_fault_alloc", "anon_fault_fallback", "split"};
#define NSTATS 3

/* ---------------------------------------------------------------- worker protocol */

enum op {
	OP_MMAP = 1,
	OP_MUNMAP,
	OP_MPROTECT,
	OP_MADVISE,
	OP_WRITE,
	OP_READ,
	OP_FORK,
	OP_EXIT,
	OP_REF,   /* addr, len, val = hold id */
	OP_PIN,   /* addr, len, val = hold id */
	OP_UNHOLD /* val = hold id: close its pipes, or unregister and close its ring */
};

/* mremap: a command number of its own, out of the enum's way. */
#define OP_MREMAP 64
/* collapse: madvise(MADV_COLLAPSE), whose errno is the statement's result, not an error. */
#define OP_COLLAPSE 65

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* include/uapi/asm-generic/mman-common.h, since 6.1 */
#endif

struct cmd {
	uint32_t op;
	uint32_t arg; /* prot / advice / child slot */
	uint64_t addr, len, val;
};

enum rep_kind { REP_DONE = 0, REP_RETIRE = 1, REP_HELLO = 2 };

struct rep {
	int32_t kind;
	int32_t err; /* errno of a failed system call (REP_DONE), 0 on success */
	uint64_t val;
};

/* ---------------------------------------------------------------- controller state */

struct mapping {
	int exists;
	uint64_t base, npages;
	uint8_t *st; /* npages state bytes, from state_pool */
};

/* A `ref` or `pin` that a process holds (the controller's side of it). */
enum hold_kind { HOLD_REF = 1, HOLD_PIN = 2 };
struct hold {
	int kind, map;
	uint64_t off, len;
	uint32_t id; /* the worker's name for its file descriptors */
};

struct proc {
	int state; /* 0 never existed, 1 alive, 2 exited */
	pid_t pid;
	int pidfd, pagemap_fd, mem_fd;
	struct mapping map[MAXMAP];
	struct hold hold[MAXHOLD];
	int nhold;
};

struct name_slot {
	uint64_t pfn; /* pfn + 1, 0 = empty */
	int64_t name; /* frame number, -1 = retired */
};

static struct proc procs[MAXPROC];
static char proc_name[MAXPROC][NAMELEN];
static char map_name[MAXMAP][NAMELEN];
static int cmd_pipe[MAXPROC][2], rep_pipe[MAXPROC][2];
static uint8_t state_pool[STATE_POOL];
static size_t state_used;
static struct name_slot names[NAME_SLOTS];
static uint32_t used_slot[NAME_SLOTS]; /* indices of the occupied slots, in insertion order */
static size_t names_used;
static int64_t next_frame;
static uint64_t stat_base[NSIZES][NSTATS], vm_base[2];
static char outbuf[1 << 16];
static size_t outlen;
static char vmstat_buf[1 << 16];
static char smaps_buf[1 << 16];
static uint64_t kflags_block[512];
static int out_fd = -1, kpageflags_fd = -1, kpagecount_fd = -1;
static int scenario_failed; /* an error line was printed: skip to the end of the scenario */
static int pmd_only; /* no per-size THP controls (6.1): see "kernels without mTHP" below */
static int have_swap; /* the zram swap device is on: see "the swap device" below */
static int cur_line;
static uint32_t next_hold_id;
static uint64_t range_pfn[MAX_RANGE_PAGES]; /* pagemap entries of a range before a statement */
static uint8_t pvm_buf[PVM_BUF];
static struct iovec pvm_iov[MAX_MAPPING / PVM_BUF];

/* ---------------------------------------------------------------- small helpers */

static void die(const char *msg)
{
	/* Only for broken environments (no /proc, no serial port): report on the console. */
	dprintf(2, "cowcore-probe: fatal: %s (errno %d)\n", msg, errno);
	sync();
	reboot(RB_POWER_OFF);
	_exit(1);
}

static void out_flush(void)
{
	size_t done = 0;
	while (done < outlen) {
		ssize_t n = write(out_fd, outbuf + done, outlen - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("write to output port");
		done += (size_t)n;
	}
	outlen = 0;
}

static void out_str(const char *s)
{
	size_t n = strlen(s);
	if (outlen + n > sizeof(outbuf))
		out_flush();
	memcpy(outbuf + outlen, s, n);
	outlen += n;
}

static void out_u64(uint64_t v)
{
	char tmp[24];
	int i = 23;
	tmp[i] = 0;
	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	out_str(tmp + i);
}

static void out_bool(int b) { out_str(b ? "true" : "false"); }

/* Print {"error":"line N: MSG"} and stop the scenario (format: "Any error stops the run"). */
static void scenario_error(const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *c = msg; *c; c++)
		if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
			*c = ' ';
	out_str("{\"error\":\"line ");
	out_u64((uint64_t)cur_line);
	out_str(": ");
	out_str(msg);
	out_str("\"}\n");
	out_flush();
	scenario_failed = 1;
}

static int write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, val, strlen(val));
	close(fd);
	return n == (ssize_t)strlen(val) ? 0 : -1;
}

static int read_u64_file(const char *path, uint64_t *v)
{
	char buf[64];
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	*v = strtoull(buf, NULL, 10);
	return 0;
}

static int pread_u64(int fd, uint64_t off, uint64_t *v)
{
	return pread(fd, v, 8, (off_t)off) == 8 ? 0 : -1;
}

static int pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* ---------------------------------------------------------------- the worker */

static sigjmp_buf fault_jmp;
static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(fault_jmp, 1);
}

static void send_rep(int fd, int kind, int err, uint64_t val)
{
	struct rep r = {kind, err, val};
	if (write(fd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(3);
}

/*
 * Store VALUE at the first byte of every page, lowest address first. After each page, the
 * frame that was mapped there before is reported if nothing maps it any more (kpagecount 0):
 * a write can free a folio (a COW copy of its last mapped page) and the next page's fault can
 * get the same frames back, so the frame's name must be retired within the statement.
 * Returns 0, or EFAULT when the store faulted (SIGSEGV; the controller checks permissions
 * first, so this only happens if its bookkeeping is wrong).
 */
static int do_write(const struct cmd *c, int pagemap, int out)
{
	if (sigsetjmp(fault_jmp, 1))
		return EFAULT;
	for (uint64_t off = 0; off < c->len; off += PAGE_SIZE) {
		uint64_t va = c->addr + off, old = 0, cnt = 1;
		if (pagemap >= 0)
			pread_u64(pagemap, va / PAGE_SIZE * 8, &old);
		*(volatile uint64_t *)va = c->val;
		if ((old & PM_PRESENT) && (old & PM_PFN_MASK)) {
			uint64_t pfn = old & PM_PFN_MASK;
			if (pread_u64(kpagecount_fd, pfn * 8, &cnt) == 0 && cnt == 0)
				send_rep(out, REP_RETIRE, 0, pfn);
		}
	}
	return 0;
}

/* Load the first 8 bytes of every page, lowest address first (read faults). */
static int do_read(const struct cmd *c)
{
	if (sigsetjmp(fault_jmp, 1))
		return EFAULT;
	for (uint64_t off = 0; off < c->len; off += PAGE_SIZE)
		(void)*(volatile uint64_t *)(c->addr + off);
	return 0;
}

/*
 * The file descriptors behind a worker's refs and pins: the read ends of the vmsplice pipes of
 * a `ref` (the write end is closed at once: the pipe keeps its buffers while one end is open),
 * the io_uring ring of a `pin`. ``id`` is the controller's hold id. Static, so that the table
 * was touched before any scenario ran (the probe's determinism rule).
 */
static struct held {
	uint32_t id;
	int fd;
	int ring; /* an io_uring fd: unregister its buffers before closing it */
} held[MAXHELD];
static int nheld;

static int held_add(uint32_t id, int fd, int ring)
{
	if (nheld == MAXHELD)
		return -1;
	held[nheld++] = (struct held){id, fd, ring};
	return 0;
}

/*
 * Release one hold (or every hold: id 0). A ring's buffers are unregistered first
 * (IORING_UNREGISTER_BUFFERS unpins the pages before the syscall returns), because closing the
 * last ring fd frees the ring from a workqueue (io_ring_exit_work in io_uring/io_uring.c), which
 * would drop the pins at some later moment. Closing a pipe drops its page references at once
 * (pipe_release() -> free_pipe_info(); the final fput runs before close() returns to user
 * space).
 */
static int held_release(uint32_t id)
{
	int err = 0, j = 0;
	for (int i = 0; i < nheld; i++) {
		if (id && held[i].id != id) {
			held[j++] = held[i];
			continue;
		}
		if (held[i].ring &&
		    syscall(SYS_io_uring_register, held[i].fd, IORING_UNREGISTER_BUFFERS, NULL, 0))
			err = errno;
		close(held[i].fd);
	}
	nheld = j;
	return err;
}

/*
 * `ref`: vmsplice() the range into pipes that this process keeps open. vmsplice_to_pipe()
 * (fs/splice.c) takes one page reference per page with get_user_pages_fast() without
 * FOLL_WRITE (a read fault where nothing is mapped) and stores it in a pipe buffer; it fills
 * only the pipe's free slots, so each pipe is sized first (F_SETPIPE_SZ) for its share of the
 * range, 1M at most.
 */
static int do_ref(const struct cmd *c)
{
	for (uint64_t done = 0; done < c->len;) {
		uint64_t chunk = c->len - done;
		int fds[2];
		if (chunk > REF_PIPE_PAGES * PAGE_SIZE)
			chunk = REF_PIPE_PAGES * PAGE_SIZE;
		if (pipe(fds))
			return errno;
		uint64_t size = PAGE_SIZE;
		while (size < chunk)
			size *= 2;
		if (fcntl(fds[1], F_SETPIPE_SZ, (int)size) < 0) {
			int err = errno;
			close(fds[0]);
			close(fds[1]);
			return err;
		}
		struct iovec iov = {(void *)(c->addr + done), chunk};
		ssize_t n = vmsplice(fds[1], &iov, 1, SPLICE_F_NONBLOCK);
		int err = n < 0 ? errno : (uint64_t)n != chunk ? EAGAIN : 0;
		close(fds[1]);
		if (err || held_add((uint32_t)c->val, fds[0], 0)) {
			close(fds[0]);
			return err ? err : EMFILE;
		}
		done += chunk;
	}
	return 0;
}

/*
 * `pin`: a ring of this process's own (io_uring_setup with one entry) and the range registered
 * as one fixed buffer (IORING_REGISTER_BUFFERS). io_sqe_buffer_register() (io_uring/rsrc.c)
 * pins it with pin_user_pages_fast(FOLL_WRITE | FOLL_LONGTERM): write faults where a page is
 * not writable, then a pin per page (a large folio's _pincount, GUP_PIN_COUNTING_BIAS on a
 * small one). Raw system calls: no liburing in a static /init.
 */
static int do_pin(const struct cmd *c)
{
	struct io_uring_params params;
	memset(&params, 0, sizeof(params));
	int ring = (int)syscall(SYS_io_uring_setup, 1, &params);
	if (ring < 0)
		return errno;
	struct iovec iov = {(void *)c->addr, c->len};
	if (syscall(SYS_io_uring_register, ring, IORING_REGISTER_BUFFERS, &iov, 1)) {
		int err = errno;
		close(ring);
		return err;
	}
	if (held_add((uint32_t)c->val, ring, 1)) {
		syscall(SYS_io_uring_register, ring, IORING_UNREGISTER_BUFFERS, NULL, 0);
		close(ring);
		return EMFILE;
	}
	return 0;
}

/*
 * A scenario process: executes the controller's commands in its own address space. Only the
 * slot's pipes are used; the controller reads everything observable from outside.
 */
static void worker(int slot) __attribute__((noreturn));
static void worker(int slot)
{
	int in = cmd_pipe[slot][0], out = rep_pipe[slot][1];
	/* "self" is resolved at open time: a forked child must open its own pagemap. */
	int pagemap = open("/proc/self/pagemap", O_RDONLY);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_segv;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel; the controller polls pidfds */
	for (;;) {
		struct cmd c;
		ssize_t n = read(in, &c, sizeof(c));
		if (n != (ssize_t)sizeof(c))
			_exit(2);
		int err = 0;
		uint64_t val = 0;
		switch (c.op) {
		case OP_MMAP: {
			/*
			 * Reserve the mapping plus 2M on each side as PROT_NONE|MAP_NORESERVE guard, then
			 * place the read/write mapping at a 2M-aligned address inside it. The guard keeps
			 * the VMA from merging with a neighbour (its flags differ: no VM_ACCOUNT, and
			 * VM_NORESERVE), because a merged VMA changes which folio sizes fit
			 * (thp_vma_suitable_order() in include/linux/huge_mm.h).
			 */
			uint64_t span = c.len + 2 * PMD_SIZE;
			void *res = mmap(NULL, span, PROT_NONE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (res == MAP_FAILED) {
				err = errno;
				break;
			}
			uint64_t start = ((uint64_t)res + PAGE_SIZE + PMD_SIZE - 1) & ~(PMD_SIZE - 1);
			void *p = mmap((void *)start, c.len, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			if (p == MAP_FAILED)
				err = errno;
			val = start;
			break;
		}
		case OP_MUNMAP:
			if (munmap((void *)c.addr, c.len))
				err = errno;
			break;
		case OP_MPROTECT:
			if (mprotect((void *)c.addr, c.len, (int)c.arg))
				err = errno;
			break;
		case OP_MADVISE:
			if (madvise((void *)c.addr, c.len, (int)c.arg))
				err = errno;
			break;
		case OP_WRITE:
			err = do_write(&c, pagemap, out);
			break;
		case OP_READ:
			err = do_read(&c);
			break;
		case OP_FORK: {
			pid_t pid = fork();
			if (pid == 0) {
				int child = (int)c.arg;
				/* The parent's refs and pins stay the parent's: close the pipes and
				 * rings the child inherited (only the fds: the ring and the pipes
				 * live on in the parent, so nothing is unregistered here). */
				for (int i = 0; i < nheld; i++)
					close(held[i].fd);
				nheld = 0;
				send_rep(rep_pipe[child][1], REP_HELLO, 0, (uint64_t)getpid());
				close(pagemap);
				worker(child);
			}
			if (pid < 0)
				err = errno;
			val = (uint64_t)pid;
			break;
		}
		case OP_MREMAP: {
			/*
			 * mremap(MREMAP_MAYMOVE | MREMAP_FIXED) into a region reserved as OP_MMAP
			 * reserves one (PROT_NONE|MAP_NORESERVE, 2M of guard on each side, so the moved
			 * VMA merges with nothing), at a 2M-aligned address plus the range's offset in
			 * its 2M block: the simulator's rule (docs/scenario-format.md, mremap), so that
			 * the same folio sizes fit (thp_vma_suitable_order) and the same huge PMDs move
			 * whole (move_huge_pmd needs both sides PMD-aligned). The kernel unmaps the
			 * reservation under the destination first (mremap_to).
			 */
			uint64_t in_block = c.addr & (PMD_SIZE - 1);
			uint64_t span = in_block + c.len + 2 * PMD_SIZE;
			void *res = mmap(NULL, span, PROT_NONE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (res == MAP_FAILED) {
				err = errno;
				break;
			}
			uint64_t dest =
				(((uint64_t)res + PAGE_SIZE + PMD_SIZE - 1) & ~(PMD_SIZE - 1)) + in_block;
			void *p = mremap((void *)c.addr, c.len, c.len, MREMAP_MAYMOVE | MREMAP_FIXED,
					 (void *)dest);
			if (p == MAP_FAILED)
				err = errno;
			val = dest;
			break;
		}
		case OP_COLLAPSE:
			if (madvise((void *)c.addr, c.len, MADV_COLLAPSE))
				err = errno;
			break;
		case OP_EXIT:
			held_release(0);
			_exit(0);
		case OP_REF:
			err = do_ref(&c);
			if (err)
				held_release((uint32_t)c.val);
			break;
		case OP_PIN:
			err = do_pin(&c);
			break;
		case OP_UNHOLD:
			err = held_release((uint32_t)c.val);
			break;
		default:
			err = EINVAL;
		}
		send_rep(out, REP_DONE, err, val);
	}
}

/* ---------------------------------------------------------------- talking to workers */

/*
 * Wait for one reply of process p. A worker that dies instead of answering (its pidfd becomes
 * readable first) is reported as a scenario error.
 */
static int get_rep(int p, struct rep *r)
{
	for (;;) {
		struct pollfd fds[2] = {{rep_pipe[p][0], POLLIN, 0}, {procs[p].pidfd, POLLIN, 0}};
		int n = poll(fds, 2, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("poll");
		if (fds[0].revents & POLLIN) {
			if (read(rep_pipe[p][0], r, sizeof(*r)) != (ssize_t)sizeof(*r))
				die("short reply");
			return 0;
		}
		if (fds[1].revents) {
			scenario_error("process %s died unexpectedly", proc_name[p]);
			return -1;
		}
	}
}

static void send_cmd(int p, uint32_t op, uint32_t arg, uint64_t addr, uint64_t len, uint64_t val)
{
	struct cmd c = {op, arg, addr, len, val};
	if (write(cmd_pipe[p][1], &c, sizeof(c)) != (ssize_t)sizeof(c))
		die("write command");
}

static void retire_pfn(uint64_t pfn);

/* Send a command and wait for its final reply, retiring frames reported on the way. */
static int call(int p, uint32_t op, uint32_t arg, uint64_t addr, uint64_t len, uint64_t val,
		struct rep *out)
{
	send_cmd(p, op, arg, addr, len, val);
	for (;;) {
		struct rep r;
		if (get_rep(p, &r))
			return -1;
		if (r.kind == REP_RETIRE) {
			retire_pfn(r.val);
			continue;
		}
		if (out)
			*out = r;
		return 0;
	}
}

/* Block until process p has exited: its mm is torn down (exit_mm() runs before
 * exit_notify() wakes pidfd pollers, kernel/exit.c do_exit()). Then reap what we can. */
static void wait_exit(int p)
{
	struct pollfd fd = {procs[p].pidfd, POLLIN, 0};
	while (poll(&fd, 1, -1) < 0 && errno == EINTR)
		;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	close(procs[p].pidfd);
	close(procs[p].pagemap_fd);
	close(procs[p].mem_fd);
	procs[p].pidfd = procs[p].pagemap_fd = procs[p].mem_fd = -1;
	procs[p].state = 2;
}

static void attach(int p, pid_t pid)
{
	char path[64];
	procs[p].pid = pid;
	procs[p].state = 1;
	procs[p].pidfd = pidfd_open(pid);
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	procs[p].pagemap_fd = open(path, O_RDONLY);
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	procs[p].mem_fd = open(path, O_RDONLY);
	if (procs[p].pidfd < 0 || procs[p].pagemap_fd < 0 || procs[p].mem_fd < 0)
		die("open /proc/<pid>/{pagemap,mem} or pidfd");
}

/* ---------------------------------------------------------------- frame names */

static struct name_slot *name_lookup(uint64_t pfn, int insert)
{
	uint64_t h = (pfn * 0x9E3779B97F4A7C15ULL) >> 45;
	for (uint64_t i = 0; i < NAME_SLOTS; i++) {
		struct name_slot *s = &names[(h + i) & (NAME_SLOTS - 1)];
		if (s->pfn == pfn + 1)
			return s;
		if (s->pfn == 0) {
			if (!insert)
				return NULL;
			if (names_used * 4 > NAME_SLOTS * 3)
				die("too many frames named");
			used_slot[names_used++] = (uint32_t)(s - names);
			s->pfn = pfn + 1;
			s->name = -1;
			return s;
		}
	}
	return NULL;
}

static void retire_pfn(uint64_t pfn)
{
	struct name_slot *s = name_lookup(pfn, 0);
	if (s)
		s->name = -1;
}

/*
 * A named frame is retired once nothing maps it any more (kpagecount 0: the page's mapcount,
 * fs/proc/page.c kpagecount_read()); an anonymous page is never mapped again after that, so a
 * later sighting of the same PFN is a new frame and gets a new name.
 */
static void retire_unmapped(void)
{
	for (size_t i = 0; i < names_used; i++) {
		struct name_slot *s = &names[used_slot[i]];
		uint64_t cnt;
		if (s->name < 0)
			continue;
		if (pread_u64(kpagecount_fd, (s->pfn - 1) * 8, &cnt) == 0 && cnt == 0)
			s->name = -1;
	}
}

/* ---------------------------------------------------------------- observations */

/*
 * Pages in the folio holding pfn: find the compound head by walking back over tail pages and
 * count the tails after it (kpageflags KPF_COMPOUND_HEAD/TAIL, set by stable_page_flags() in
 * fs/proc/page.c). Anonymous folios are at most PMD-sized and naturally aligned, so one
 * 512-entry block aligned to 2M holds the whole folio.
 */
static uint64_t folio_pages(uint64_t pfn, uint64_t *flags_out)
{
	uint64_t base = pfn & ~511ULL;
	if (pread(kpageflags_fd, kflags_block, sizeof(kflags_block), (off_t)(base * 8)) !=
	    (ssize_t)sizeof(kflags_block))
		die("read /proc/kpageflags");
	uint64_t i = pfn - base;
	*flags_out = kflags_block[i];
	if (!(kflags_block[i] & ((1ULL << KPF_COMPOUND_HEAD) | (1ULL << KPF_COMPOUND_TAIL))))
		return 1;
	while (i > 0 && (kflags_block[i] & (1ULL << KPF_COMPOUND_TAIL)))
		i--;
	uint64_t n = 1;
	while (i + n < 512 && (kflags_block[i + n] & (1ULL << KPF_COMPOUND_TAIL)))
		n++;
	return n;
}

static void observe_page(int p, int m, uint64_t off)
{
	struct mapping *mp = &procs[p].map[m];
	uint64_t idx = off / PAGE_SIZE, ent = 0;
	out_str("{\"proc\":\"");
	out_str(proc_name[p]);
	out_str("\",\"map\":\"");
	out_str(map_name[m]);
	out_str("\",\"off\":");
	out_u64(off);
	/* Pages unmapped by the scenario are not present (never read: another mapping may have
	 * been placed in a hole). */
	if (idx < mp->npages && (mp->st[idx] & ST_PROT) != ST_UNMAPPED)
		if (pread_u64(procs[p].pagemap_fd, (mp->base / PAGE_SIZE + idx) * 8, &ent))
			die("read pagemap");
	if (!(ent & PM_PRESENT)) {
		/* A swap entry (pagemap_pte_hole/pte_to_pagemap_entry set PM_SWAP): the page is
		 * not read, which would swap it in. */
		out_str(ent & PM_SWAP ? ",\"present\":false,\"frame\":\"swap\""
				      : ",\"present\":false,\"frame\":null");
		out_str(",\"folio_pages\":null,\"mapcount\":null,"
			"\"exclusive\":null,\"content\":null}\n");
		return;
	}
	uint64_t pfn = ent & PM_PFN_MASK, flags = 0, count = 0, content = 0;
	uint64_t npages = folio_pages(pfn, &flags);
	if (pread_u64(kpagecount_fd, pfn * 8, &count))
		die("read /proc/kpagecount");
	/* A PROT_NONE page is read through FOLL_FORCE (proc_mem.force_override=always). */
	if (pread_u64(procs[p].mem_fd, mp->base + off, &content))
		content = 0;
	out_str(",\"present\":true,\"frame\":\"");
	if (flags & (1ULL << KPF_ZERO_PAGE)) {
		/* stable_page_flags(): the huge zero folio has KPF_ZERO_PAGE and KPF_THP. */
		out_str(flags & (1ULL << KPF_THP) ? "hzero" : "zero");
	} else {
		struct name_slot *s = name_lookup(pfn, 1);
		if (s->name < 0)
			s->name = next_frame++;
		out_str("f");
		out_u64((uint64_t)s->name);
	}
	out_str("\",\"folio_pages\":");
	out_u64(npages);
	out_str(",\"mapcount\":");
	out_u64(count);
	out_str(",\"exclusive\":");
	out_bool(!!(ent & PM_MMAP_EXCLUSIVE));
	out_str(",\"content\":");
	out_u64(content);
	out_str("}\n");
}

static int read_counters(uint64_t st[NSIZES][NSTATS], uint64_t vm[2])
{
	char path[128];
	for (int s = 0; s < NSIZES; s++)
		for (int k = 0; k < NSTATS; k++) {
			snprintf(path, sizeof(path), THP "hugepages-%ukB/stats/%s", size_kb[s],
				 stat_name[k]);
			st[s][k] = 0;
			read_u64_file(path, &st[s][k]);
		}
	int fd = open("/proc/vmstat", O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, vmstat_buf, sizeof(vmstat_buf) - 1);
	close(fd);
	vmstat_buf[n > 0 ? n : 0] = 0;
	vm[0] = vm[1] = 0;
	for (char *line = vmstat_buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (!strncmp(line, "thp_fault_alloc ", 16))
			vm[0] = strtoull(line + 16, NULL, 10);
		else if (!strncmp(line, "thp_split_pmd ", 14))
			vm[1] = strtoull(line + 14, NULL, 10);
		line = nl ? nl + 1 : NULL;
	}
	return 0;
}

/*
 * The deferred-split counters of the format's second edition, printed after the older keys:
 * the per-size mTHP stats split_deferred (a count: delta since the run began), nr_anon and
 * nr_anon_partially_mapped (levels, kept by mod_mthp_stat() in mm/rmap.c, mm/huge_memory.c and
 * mm/page_alloc.c), then the vmstat events thp_deferred_split_page, thp_split_page and
 * thp_fault_fallback. The levels are printed minus their value when the run began too: in the
 * bare guest that value is 0 (the probe's own memory is small pages), so this is the current
 * value, and the subtraction keeps a folio left over from an earlier scenario out of the next
 * one. A file the kernel does not have (older kernels lack some of these stats) is left out:
 * a per-size key appears only if some size has the file.
 */
/*
 * The swap counters of `pageout` follow the same rules (deltas, printed when non-zero, left out
 * where the kernel lacks them; a per-size map only when some size is non-zero): the per-size
 * mTHP stats swpout, swpout_fallback (6.10+), swpin and swpin_fallback (6.13+), and the vmstat
 * events pswpin, pswpout (pages read from and written to swap), thp_swpout and
 * thp_swpout_fallback (PMD-size folios swapped out whole or split first).
 */
static const char *const dsplit_name[] = {"split_deferred", "nr_anon", "nr_anon_partially_mapped",
					  "swpout",	    "swpout_fallback", "swpin",
					  "swpin_fallback"};
#define NDSPLIT 7
#define NDSPLIT_ALWAYS 3 /* printed even when empty: the maps of the format's second edition */
static const char *const dsplit_vm_name[] = {"thp_deferred_split_page", "thp_split_page",
					     "thp_fault_fallback",	 "thp_collapse_alloc",
					     "thp_collapse_alloc_failed", "pswpin",
					     "pswpout",		 "thp_swpout",
					     "thp_swpout_fallback"};
#define NDSPLIT_VM 9
/* UINT64_MAX marks a counter the kernel does not have. */
static uint64_t dsplit_base[NSIZES][NDSPLIT], dsplit_vm_base[NDSPLIT_VM];

static void read_dsplit_counters(uint64_t st[NSIZES][NDSPLIT], uint64_t vm[NDSPLIT_VM])
{
	char path[128];
	for (int s = 0; s < NSIZES; s++)
		for (int k = 0; k < NDSPLIT; k++) {
			snprintf(path, sizeof(path), THP "hugepages-%ukB/stats/%s", size_kb[s],
				 dsplit_name[k]);
			if (read_u64_file(path, &st[s][k]))
				st[s][k] = UINT64_MAX;
		}
	/* vmstat_buf holds /proc/vmstat as read_counters() just read it. */
	for (int k = 0; k < NDSPLIT_VM; k++)
		vm[k] = UINT64_MAX;
	for (char *line = vmstat_buf; line && *line;) {
		char *nl = strchr(line, '\n');
		for (int k = 0; k < NDSPLIT_VM; k++) {
			size_t n = strlen(dsplit_vm_name[k]);
			if (!strncmp(line, dsplit_vm_name[k], n) && line[n] == ' ')
				vm[k] = strtoull(line + n + 1, NULL, 10);
		}
		line = nl ? nl + 1 : NULL;
	}
}

static void print_dsplit_stats(void)
{
	uint64_t st[NSIZES][NDSPLIT], vm[NDSPLIT_VM];
	read_dsplit_counters(st, vm);
	for (int k = 0; k < NDSPLIT; k++) {
		int have = 0, first = 1, nonzero = 0;
		for (int s = 0; s < NSIZES; s++) {
			int both = st[s][k] != UINT64_MAX && dsplit_base[s][k] != UINT64_MAX;
			have |= both;
			nonzero |= both && st[s][k] != dsplit_base[s][k];
		}
		/* The swap maps (after the first NDSPLIT_ALWAYS) appear only when not empty, so
		 * that recordings made before `pageout` keep their lines. */
		if (!have || (k >= NDSPLIT_ALWAYS && !nonzero))
			continue;
		out_str(",\"");
		out_str(dsplit_name[k]);
		out_str("\":{");
		for (int s = 0; s < NSIZES; s++) {
			if (st[s][k] == UINT64_MAX || dsplit_base[s][k] == UINT64_MAX)
				continue;
			uint64_t d = st[s][k] - dsplit_base[s][k];
			if (!d)
				continue;
			out_str(first ? "\"" : ",\"");
			out_str(size_name[s]);
			out_str("\":");
			/* A level below its start value would print as a huge number: print it signed. */
			if ((int64_t)d < 0) {
				out_str("-");
				d = (uint64_t)(-(int64_t)d);
			}
			out_u64(d);
			first = 0;
		}
		out_str("}");
	}
	for (int k = 0; k < NDSPLIT_VM; k++) {
		if (vm[k] == UINT64_MAX || dsplit_vm_base[k] == UINT64_MAX || vm[k] == dsplit_vm_base[k])
			continue;
		out_str(",\"");
		out_str(dsplit_vm_name[k]);
		out_str("\":");
		out_u64(vm[k] - dsplit_vm_base[k]);
	}
}

/*
 * The keys after the per-size ones are printed with a leading comma; on a kernel without
 * per-size stats (pmd_only) the first key printed must lose it. ``keys`` is where the keys
 * begin in outbuf (print_stats() flushed before the line, so the line is all in outbuf).
 */
static void stats_drop_leading_comma(size_t keys)
{
	if (outlen > keys && outbuf[keys] == ',') {
		memmove(outbuf + keys, outbuf + keys + 1, outlen - keys - 1);
		outlen--;
	}
}

static void print_stats(void)
{
	uint64_t st[NSIZES][NSTATS], vm[2];
	read_counters(st, vm);
	out_flush(); /* the whole line stays in outbuf: stats_drop_leading_comma() edits it */
	out_str("{\"stats\":{");
	size_t keys = outlen;
	/* A PMD-only kernel (6.1) has no per-size stats files: print no per-size keys. */
	for (int k = 0; k < NSTATS && !pmd_only; k++) {
		out_str(k ? ",\"" : "\"");
		out_str(stat_name[k]);
		out_str("\":{");
		int first = 1;
		for (int s = 0; s < NSIZES; s++) {
			uint64_t d = st[s][k] - stat_base[s][k];
			if (!d)
				continue;
			out_str(first ? "\"" : ",\"");
			out_str(size_name[s]);
			out_str("\":");
			out_u64(d);
			first = 0;
		}
		out_str("}");
	}
	static const char *const vm_name[] = {"thp_fault_alloc", "thp_split_pmd"};
	for (int k = 0; k < 2; k++) {
		if (vm[k] == vm_base[k])
			continue;
		out_str(",\"");
		out_str(vm_name[k]);
		out_str("\":");
		out_u64(vm[k] - vm_base[k]);
	}
	print_dsplit_stats();
	stats_drop_leading_comma(keys);
	out_str("}}\n");
}

/*
 * The smaps fields of the format, in its key order (the order __show_smap() in
 * fs/proc/task_mmu.c prints them, without the lines the format leaves out).
 */
static const char *const smaps_field[] = {"Rss",	   "Pss",	   "Pss_Dirty",
					  "Shared_Clean",  "Shared_Dirty",  "Private_Clean",
					  "Private_Dirty", "Referenced",    "Anonymous",
					  "AnonHugePages", "Swap",	   "SwapPss"};
#define NSMAPS 12

/* One line of /proc/<pid>/smaps: a VMA header ("start-end perms ...") decides whether the
 * field lines after it count (the VMA lies inside [lo, hi)); a counted field line adds its kB
 * value. */
static void smaps_line(const char *line, uint64_t lo, uint64_t hi, int *inside,
		       uint64_t sum[NSMAPS])
{
	char *end;
	uint64_t start = strtoull(line, &end, 16);
	if (end != line && *end == '-') {
		uint64_t stop = strtoull(end + 1, &end, 16);
		if (*end == ' ') {
			*inside = start >= lo && stop <= hi;
			return;
		}
	}
	if (!*inside)
		return;
	for (int k = 0; k < NSMAPS; k++) {
		size_t n = strlen(smaps_field[k]);
		if (!strncmp(line, smaps_field[k], n) && line[n] == ':') {
			sum[k] += strtoull(line + n + 1, NULL, 10);
			return;
		}
	}
}

/*
 * `P smaps NAME`: for each field, the sum of the kB values /proc/<pid>/smaps prints for the
 * VMAs that lie inside the mapping's range (mprotect and munmap split it; the guard VMAs
 * around it are outside). Reading smaps has no side effect on the pages (smap_gather_stats()
 * only walks the page tables), and the static buffer was touched at start-up.
 */
static void print_smaps(int p, int m)
{
	struct mapping *mp = &procs[p].map[m];
	uint64_t lo = mp->base, hi = mp->base + mp->npages * PAGE_SIZE, sum[NSMAPS] = {0};
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)procs[p].pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open /proc/<pid>/smaps");
	size_t have = 0;
	int inside = 0;
	for (;;) {
		ssize_t n = read(fd, smaps_buf + have, sizeof(smaps_buf) - 1 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("read /proc/<pid>/smaps");
		have += (size_t)n;
		smaps_buf[have] = 0;
		char *line = smaps_buf, *nl;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			smaps_line(line, lo, hi, &inside, sum);
			line = nl + 1;
		}
		have -= (size_t)(line - smaps_buf);
		memmove(smaps_buf, line, have);
		if (n == 0) {
			if (have) {
				smaps_buf[have] = 0;
				smaps_line(smaps_buf, lo, hi, &inside, sum);
			}
			break;
		}
		if (have == sizeof(smaps_buf) - 1)
			die("smaps line too long");
	}
	close(fd);
	out_str("{\"smaps\":{\"proc\":\"");
	out_str(proc_name[p]);
	out_str("\",\"map\":\"");
	out_str(map_name[m]);
	out_str("\"");
	for (int k = 0; k < NSMAPS; k++) {
		out_str(",\"");
		out_str(smaps_field[k]);
		out_str("\":");
		out_u64(sum[k]);
	}
	out_str("}}\n");
	out_flush();
}

/* ---------------------------------------------------------------- statements */

static int parse_idx(const char *tok, int max)
{
	char *end;
	long v = tok ? strtol(tok, &end, 10) : -1;
	if (!tok || *end || v < 0 || v >= max)
		return -1;
	return (int)v;
}

static uint64_t parse_u64(const char *tok) { return tok ? strtoull(tok, NULL, 10) : 0; }

/* The process must exist and be alive (format: "an unknown process ... a process that has
 * exited" are run-time errors). */
static int live_proc(int p)
{
	if (procs[p].state == 0) {
		scenario_error("unknown process %s", proc_name[p]);
		return 0;
	}
	if (procs[p].state == 2) {
		scenario_error("process %s has exited", proc_name[p]);
		return 0;
	}
	return 1;
}

static struct mapping *get_map(int p, int m)
{
	if (!procs[p].map[m].exists) {
		scenario_error("process %s has no mapping %s", proc_name[p], map_name[m]);
		return NULL;
	}
	return &procs[p].map[m];
}

/* Every page of [off, off+len) must be mapped (need = 0) or allow the access (need = ST_R
 * for a load, ST_RW for a store). */
static int check_range(int p, int m, uint64_t off, uint64_t len, int need, const char *what)
{
	struct mapping *mp = &procs[p].map[m];
	for (uint64_t o = off; o < off + len; o += PAGE_SIZE) {
		uint64_t i = o / PAGE_SIZE;
		int prot = i < mp->npages ? mp->st[i] & ST_PROT : ST_UNMAPPED;
		if (prot == ST_UNMAPPED) {
			scenario_error("%s %s %s: page at offset %llu is not mapped", proc_name[p],
				       what, map_name[m], (unsigned long long)o);
			return 0;
		}
		if ((need == ST_R && prot < ST_R) || (need == ST_RW && prot != ST_RW)) {
			scenario_error("%s %s %s: page at offset %llu has no %s permission",
				       proc_name[p], what, map_name[m], (unsigned long long)o,
				       need == ST_RW ? "write" : "read");
			return 0;
		}
	}
	return 1;
}

static uint8_t *pool_alloc(uint64_t n)
{
	if (state_used + n > STATE_POOL)
		return NULL;
	uint8_t *p = state_pool + state_used;
	state_used += n;
	return p;
}

static int sys_error(int err, const char *what)
{
	if (err)
		scenario_error("%s failed: %s", what, strerror(err));
	return err;
}

/* Pagemap entries of pages [first, first + n) of mapping m of process p, into range_pfn. */
static void snap_range(int p, int m, uint64_t first, uint64_t n)
{
	struct mapping *mp = &procs[p].map[m];
	size_t bytes = (size_t)n * 8;
	if (pread(procs[p].pagemap_fd, range_pfn, bytes, (off_t)((mp->base / PAGE_SIZE + first) * 8)) !=
	    (ssize_t)bytes)
		die("read pagemap");
}

/*
 * After a statement that faults a whole range in one system call (`ref`, `pin`, `unshare`):
 * a folio freed half-way through it (the last page of a COW-shared folio replaced by a copy)
 * may give its frames to a later page's copy within the same call, and such a frame must not
 * keep its old name (the format's retirement rule; `write` handles it page by page instead).
 * A page never moves to another offset, so a frame now mapped at page i that was at page j != i
 * before the call was freed and handed out again: retire its name before anything observes it.
 */
static void retire_reused(int p, int m, uint64_t first, uint64_t n)
{
	struct mapping *mp = &procs[p].map[m];
	for (uint64_t i = 0; i < n; i++) {
		uint64_t now;
		if (!(range_pfn[i] & PM_PRESENT) || !(range_pfn[i] & PM_PFN_MASK))
			continue;
		if (pread_u64(procs[p].pagemap_fd, (mp->base / PAGE_SIZE + first + i) * 8, &now))
			die("read pagemap");
		uint64_t old = range_pfn[i] & PM_PFN_MASK;
		if (!(now & PM_PRESENT) || (now & PM_PFN_MASK) == old)
			continue;
		for (uint64_t j = 0; j < n; j++)
			if (j != i && (range_pfn[j] & PM_PRESENT) &&
			    (range_pfn[j] & PM_PFN_MASK) == (now & PM_PFN_MASK))
				retire_pfn(now & PM_PFN_MASK);
	}
}

/*
 * `unshare`: this controller process (not P) reads the range with process_vm_readv(), which
 * takes short FOLL_PIN pins without FOLL_WRITE (pin_user_pages_remote() in
 * process_vm_rw_single_vec(), mm/process_vm_access.c, up to 1024 pages a batch): every page
 * that GUP must unshare (gup_must_unshare(): an anonymous page that is not PageAnonExclusive)
 * goes through the unshare fault (FAULT_FLAG_UNSHARE), a page not present through a read fault.
 * One call for the whole range, as a reader would make it; the local side is the same 1M
 * buffer over and over.
 */
static int do_unshare(int p, uint64_t addr, uint64_t len)
{
	size_t niov = 0;
	for (uint64_t done = 0; done < len; done += PVM_BUF)
		pvm_iov[niov++] = (struct iovec){pvm_buf, len - done < PVM_BUF ? len - done : PVM_BUF};
	struct iovec remote = {(void *)addr, len};
	ssize_t n = process_vm_readv(procs[p].pid, pvm_iov, niov, &remote, 1, 0);
	if (n < 0)
		return errno;
	return (uint64_t)n == len ? 0 : EFAULT;
}

/* The hold of kind `kind` on exactly [off, off+len) of mapping m that p took last, or -1. */
static int find_hold(int p, int kind, int m, uint64_t off, uint64_t len)
{
	for (int i = procs[p].nhold - 1; i >= 0; i--) {
		struct hold *h = &procs[p].hold[i];
		if (h->kind == kind && h->map == m && h->off == off && h->len == len)
			return i;
	}
	return -1;
}

/* `ref`, `unref`, `pin`, `unpin`, `unshare` (docs/scenario-format.md, "References, pins"). */
static void hold_statement(int p, int m, const char *verb, uint64_t off, uint64_t len)
{
	struct mapping *mp = &procs[p].map[m];
	uint64_t first = off / PAGE_SIZE, n = len / PAGE_SIZE;
	struct rep r;
	if (!strcmp(verb, "unref") || !strcmp(verb, "unpin")) {
		int kind = verb[2] == 'r' ? HOLD_REF : HOLD_PIN;
		int i = find_hold(p, kind, m, off, len);
		if (i < 0) {
			scenario_error("%s %s %s: no %s of that range", proc_name[p], verb, map_name[m],
				       verb + 2);
			return;
		}
		if (call(p, OP_UNHOLD, 0, 0, 0, procs[p].hold[i].id, &r) || sys_error(r.err, verb))
			return;
		procs[p].hold[i] = procs[p].hold[--procs[p].nhold];
		return;
	}
	int pin = !strcmp(verb, "pin");
	/* vmsplice and process_vm_readv read without FOLL_FORCE, the pin writes: an unmapped or
	 * inaccessible page makes GUP fail with EFAULT, checked here before anything happens. */
	if (!check_range(p, m, off, len, pin ? ST_RW : ST_R, verb))
		return;
	if (strcmp(verb, "unshare") && procs[p].nhold == MAXHOLD) {
		scenario_error("%s %s: more than %d refs and pins held (probe limit)", proc_name[p],
			       verb, MAXHOLD);
		return;
	}
	snap_range(p, m, first, n);
	if (!strcmp(verb, "unshare")) {
		if (sys_error(do_unshare(p, mp->base + off, len), "process_vm_readv"))
			return;
	} else {
		uint32_t id = ++next_hold_id;
		if (call(p, pin ? OP_PIN : OP_REF, 0, mp->base + off, len, id, &r) ||
		    sys_error(r.err, pin ? "io_uring_register" : "vmsplice"))
			return;
		procs[p].hold[procs[p].nhold++] =
			(struct hold){pin ? HOLD_PIN : HOLD_REF, m, off, len, id};
	}
	retire_reused(p, m, first, n);
}

/* The errno names a `collapse` prints (madvise_collapse_errno() in mm/khugepaged.c and
 * madvise()'s own: ENOMEM for an unmapped hole, EPERM/EINVAL for a refused VMA). */
static void out_errno(int err)
{
	static const struct {
		int err;
		const char *name;
	} names[] = {{EINVAL, "EINVAL"}, {EAGAIN, "EAGAIN"}, {ENOMEM, "ENOMEM"},
		     {EBUSY, "EBUSY"},   {EPERM, "EPERM"},   {EFAULT, "EFAULT"}};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].err == err) {
			out_str("\"");
			out_str(names[i].name);
			out_str("\"");
			return;
		}
	out_str("\"E");
	out_u64((uint64_t)err);
	out_str("\"");
}

/*
 * `collapse`: P calls madvise(MADV_COLLAPSE) on the range (madvise_collapse() in
 * mm/khugepaged.c runs synchronously in the caller, khugepaged's sleep does not matter) and
 * the controller prints {"collapse":"P","map":"A","result":0 or "ERRNO"}. The collapsed
 * pages' frames are freed; a frame handed out again within the call (a later 2M block's new
 * THP) loses its old name, as after `unshare`.
 */
static void collapse_statement(int p, int m, uint64_t off, uint64_t len)
{
	struct rep r;
	if (!check_range(p, m, off, len, 0, "collapse"))
		return;
	snap_range(p, m, off / PAGE_SIZE, len / PAGE_SIZE);
	if (call(p, OP_COLLAPSE, 0, procs[p].map[m].base + off, len, 0, &r))
		return;
	retire_reused(p, m, off / PAGE_SIZE, len / PAGE_SIZE);
	out_str("{\"collapse\":\"");
	out_str(proc_name[p]);
	out_str("\",\"map\":\"");
	out_str(map_name[m]);
	out_str("\",\"result\":");
	if (r.err)
		out_errno(r.err);
	else
		out_str("0");
	out_str("}\n");
	out_flush();
}

static void process_statement(int p, char **tok, int ntok)
{
	const char *verb = ntok > 0 ? tok[0] : "";
	struct rep r;
	if (!live_proc(p))
		return;
	if (!strcmp(verb, "fork")) {
		int c = parse_idx(ntok > 1 ? tok[1] : NULL, MAXPROC);
		if (c < 0)
			die("bad fork statement");
		if (procs[c].state != 0) {
			scenario_error("fork: the name %s is already used", proc_name[c]);
			return;
		}
		if (call(p, OP_FORK, (uint32_t)c, 0, 0, 0, &r) || sys_error(r.err, "fork"))
			return;
		struct rep hello;
		procs[c].pidfd = -1;
		if (read(rep_pipe[c][0], &hello, sizeof(hello)) != (ssize_t)sizeof(hello) ||
		    hello.kind != REP_HELLO)
			die("child hello");
		attach(c, (pid_t)r.val);
		/* dup_mmap() (kernel/fork.c): VM_DONTCOPY areas are not copied into the child. */
		for (int m = 0; m < MAXMAP; m++) {
			struct mapping *src = &procs[p].map[m], *dst = &procs[c].map[m];
			*dst = *src;
			if (!src->exists)
				continue;
			dst->st = pool_alloc(src->npages);
			if (!dst->st) {
				scenario_error("probe out of bookkeeping memory");
				return;
			}
			for (uint64_t i = 0; i < src->npages; i++)
				dst->st[i] = (src->st[i] & ST_DONTFORK) ? ST_UNMAPPED : src->st[i];
		}
		return;
	}
	if (!strcmp(verb, "exit")) {
		/* The worker unregisters its rings' buffers before it exits (held_release()). */
		send_cmd(p, OP_EXIT, 0, 0, 0, 0);
		wait_exit(p);
		procs[p].nhold = 0;
		return;
	}
	int m = parse_idx(ntok > 1 ? tok[1] : NULL, MAXMAP);
	if (m < 0)
		die("bad mapping index");
	if (!strcmp(verb, "mmap")) {
		uint64_t len = parse_u64(ntok > 2 ? tok[2] : NULL);
		if (procs[p].map[m].exists) {
			scenario_error("%s already has a mapping %s", proc_name[p], map_name[m]);
			return;
		}
		if (len > MAX_MAPPING) {
			scenario_error("mapping %s is over 1G", map_name[m]);
			return;
		}
		uint8_t *st = pool_alloc(len / PAGE_SIZE);
		if (!st) {
			scenario_error("probe out of bookkeeping memory");
			return;
		}
		if (call(p, OP_MMAP, 0, 0, len, 0, &r) || sys_error(r.err, "mmap"))
			return;
		memset(st, ST_RW, len / PAGE_SIZE);
		procs[p].map[m] = (struct mapping){1, r.val, len / PAGE_SIZE, st};
		return;
	}
	struct mapping *mp = get_map(p, m);
	if (!mp)
		return;
	if (!strcmp(verb, "smaps")) {
		print_smaps(p, m);
		return;
	}
	uint64_t off = parse_u64(ntok > 2 ? tok[2] : NULL), len = parse_u64(ntok > 3 ? tok[3] : NULL);
	uint64_t first = off / PAGE_SIZE, n = len / PAGE_SIZE;
	if (!strcmp(verb, "observe")) {
		/* Format: an observe range must lie inside the mapping as created. */
		if (first + n > mp->npages) {
			scenario_error("observe %s: the range ends at offset %llu, past the end of "
				       "the mapping as created (%llu bytes)",
				       map_name[m], (unsigned long long)(off + len),
				       (unsigned long long)(mp->npages * PAGE_SIZE));
			return;
		}
		for (uint64_t o = off; o < off + len; o += PAGE_SIZE)
			observe_page(p, m, o);
		out_flush();
		return;
	}
	if (!strcmp(verb, "munmap")) {
		/* Unmapping unmapped pages is fine; only the part inside the mapping is touched. */
		if (first >= mp->npages)
			return;
		if (first + n > mp->npages)
			n = mp->npages - first;
		if (call(p, OP_MUNMAP, 0, mp->base + off, n * PAGE_SIZE, 0, &r) ||
		    sys_error(r.err, "munmap"))
			return;
		memset(mp->st + first, ST_UNMAPPED, n);
		return;
	}
	if (!strcmp(verb, "mprotect")) {
		const char *prot = ntok > 4 ? tok[4] : "";
		int st = !strcmp(prot, "rw") ? ST_RW : !strcmp(prot, "r") ? ST_R : ST_NONE;
		int pr = st == ST_RW ? PROT_READ | PROT_WRITE : st == ST_R ? PROT_READ : PROT_NONE;
		if (!check_range(p, m, off, len, 0, "mprotect"))
			return;
		if (call(p, OP_MPROTECT, (uint32_t)pr, mp->base + off, len, 0, &r) ||
		    sys_error(r.err, "mprotect"))
			return;
		for (uint64_t i = first; i < first + n; i++)
			mp->st[i] = (uint8_t)((mp->st[i] & ~ST_PROT) | st);
		return;
	}
	if (!strcmp(verb, "madvise")) {
		static const struct {
			const char *name;
			int advice;
		} advices[] = {{"hugepage", MADV_HUGEPAGE},     {"nohugepage", MADV_NOHUGEPAGE},
			       {"dontneed", MADV_DONTNEED},     {"dontfork", MADV_DONTFORK},
			       {"dofork", MADV_DOFORK},         {"wipeonfork", MADV_WIPEONFORK},
			       {"keeponfork", MADV_KEEPONFORK}};
		const char *name = ntok > 4 ? tok[4] : "";
		int advice = -1;
		for (size_t i = 0; i < sizeof(advices) / sizeof(advices[0]); i++)
			if (!strcmp(name, advices[i].name))
				advice = advices[i].advice;
		if (advice < 0)
			die("bad advice");
		if (!check_range(p, m, off, len, 0, "madvise"))
			return;
		if (call(p, OP_MADVISE, (uint32_t)advice, mp->base + off, len, 0, &r) ||
		    sys_error(r.err, "madvise"))
			return;
		for (uint64_t i = first; i < first + n; i++) {
			if (advice == MADV_DONTFORK)
				mp->st[i] |= ST_DONTFORK;
			else if (advice == MADV_DOFORK)
				mp->st[i] &= (uint8_t)~ST_DONTFORK;
		}
		return;
	}
	if (!strcmp(verb, "mremap")) {
		/* The range moves to a fresh address as mapping NEWMAP; the old range is a hole. */
		int nm = parse_idx(ntok > 4 ? tok[4] : NULL, MAXMAP);
		if (nm < 0)
			die("bad mremap statement");
		if (procs[p].map[nm].exists) {
			scenario_error("%s already has a mapping %s", proc_name[p], map_name[nm]);
			return;
		}
		if (!check_range(p, m, off, len, 0, "mremap"))
			return;
		uint8_t *st = pool_alloc(n);
		if (!st) {
			scenario_error("probe out of bookkeeping memory");
			return;
		}
		if (call(p, OP_MREMAP, 0, mp->base + off, len, 0, &r))
			return;
		if (r.err == EFAULT) { /* vma_to_resize: not inside one VMA (the simulator's words) */
			scenario_error("mremap %s: the range is not inside one mapping (EFAULT)",
				       map_name[m]);
			return;
		}
		if (sys_error(r.err, "mremap"))
			return;
		memcpy(st, mp->st + first, n);
		memset(mp->st + first, ST_UNMAPPED, n);
		procs[p].map[nm] = (struct mapping){1, r.val, n, st};
		return;
	}
	if (!strcmp(verb, "pageout")) {
		/* madvise(MADV_PAGEOUT) with no swap device reclaims nothing: an error, so that a
		 * kernel without its zram module cannot record a wrong observation. */
		if (!have_swap) {
			scenario_error("pageout: the guest has no swap device (zram module missing)");
			return;
		}
		if (!check_range(p, m, off, len, 0, "pageout"))
			return;
		if (call(p, OP_MADVISE, (uint32_t)MADV_PAGEOUT, mp->base + off, len, 0, &r) ||
		    sys_error(r.err, "madvise(MADV_PAGEOUT)"))
			return;
		return;
	}
	if (!strcmp(verb, "collapse")) {
		collapse_statement(p, m, off, len);
		return;
	}
	if (!strcmp(verb, "ref") || !strcmp(verb, "unref") || !strcmp(verb, "pin") ||
	    !strcmp(verb, "unpin") || !strcmp(verb, "unshare")) {
		hold_statement(p, m, verb, off, len);
		return;
	}
	if (!strcmp(verb, "write") || !strcmp(verb, "read")) {
		int w = verb[0] == 'w';
		if (!check_range(p, m, off, len, w ? ST_RW : ST_R, verb))
			return;
		uint64_t val = w ? parse_u64(ntok > 4 ? tok[4] : "1") : 0;
		if (call(p, w ? OP_WRITE : OP_READ, 0, mp->base + off, len, val, &r))
			return;
		if (r.err)
			scenario_error("%s %s: unexpected fault (SIGSEGV)", proc_name[p], verb);
		return;
	}
	die("unknown verb");
}

/* ---------------------------------------------------------------- scenarios */

/* ---------------------------------------------------------------- kernels without mTHP */

/*
 * Kernels before multi-size THP (6.1: per-size controls came with 6.8, commit 3485b88390b0
 * "mm: thp: introduce multi-size THP sysfs interface") have no hugepages-<kB>kB directories:
 * the top-level "enabled" is the only knob, and it governs the one THP size, PMD (2M).
 * hugepage_vma_check() of 6.1 (mm/huge_memory.c) allows a PMD THP when "enabled" is always,
 * or madvise and the VMA has VM_HUGEPAGE; 6.8+ thp_vma_allowable_orders() makes the same
 * decision for order 9 from hugepages-2048kB/enabled, taking the top-level value where that
 * is "inherit". So the probe keeps the scenario's two settings for 2M here and writes the
 * effective one (2M's own setting unless it is inherit, then the top-level one) to the single
 * knob: a scenario means on 6.1 what it means on later kernels. Any other size is an error,
 * as its sysfs file does not exist (docs/scenario-format.md, `kernel 6.1`).
 */
static char pmd_size_mode[16];        /* `thp size 2M MODE`: inherit|always|madvise|never */
static char pmd_global_mode[16];      /* `thp enabled MODE`: always|madvise|never */

static void detect_pmd_only(void)
{
	struct stat sb;
	pmd_only = stat(THP "hugepages-2048kB", &sb) != 0;
	if (pmd_only)
		dprintf(2, "cowcore-probe: no per-size THP controls (PMD-size THP only)\n");
}

/* Write the effective 2M setting to the top-level knob (a PMD-only kernel). */
static int pmd_only_apply(void)
{
	const char *mode = strcmp(pmd_size_mode, "inherit") ? pmd_size_mode : pmd_global_mode;
	return write_file(THP "enabled", mode);
}

static void pmd_only_reset(void)
{
	snprintf(pmd_size_mode, sizeof(pmd_size_mode), "inherit");
	snprintf(pmd_global_mode, sizeof(pmd_global_mode), "never");
	pmd_only_apply();
}

/* A K line on a PMD-only kernel: FILE is "enabled", "use_zero_page" or
 * "hugepages-<kB>kB/enabled" (what compile.py emits). */
static void pmd_only_knob(const char *file, const char *value)
{
	if (!strcmp(file, "enabled")) {
		snprintf(pmd_global_mode, sizeof(pmd_global_mode), "%s", value);
	} else if (!strcmp(file, "hugepages-2048kB/enabled")) {
		snprintf(pmd_size_mode, sizeof(pmd_size_mode), "%s", value);
	} else if (!strncmp(file, "hugepages-", 10)) {
		unsigned kb = (unsigned)strtoul(file + 10, NULL, 10);
		char size[16];
		if (kb % 1024)
			snprintf(size, sizeof(size), "%uK", kb);
		else
			snprintf(size, sizeof(size), "%uM", kb / 1024);
		scenario_error("thp size %s: this kernel has PMD-size (2M) THP only, no %s", size,
			       THP "hugepages-*kB");
		return;
	} else {
		char path[160];
		snprintf(path, sizeof(path), THP "%s", file);
		if (write_file(path, value))
			scenario_error("cannot write %s to %s", value, path);
		return;
	}
	if (pmd_only_apply())
		scenario_error("cannot write %s to %s", value, THP "enabled");
}

static void reset_knobs(void)
{
	char path[128];
	if (pmd_only) {
		pmd_only_reset();
		write_file(THP "use_zero_page", "1");
		return;
	}
	/* Format: "At the start of a run the per-size settings are the kernel's boot defaults: 2M
	 * is inherit and every other size never. enabled is never and use_zero_page is on". */
	for (int s = 0; s < NSIZES; s++) {
		snprintf(path, sizeof(path), THP "hugepages-%ukB/enabled", size_kb[s]);
		write_file(path, size_kb[s] == 2048 ? "inherit" : "never");
	}
	write_file(THP "enabled", "never");
	write_file(THP "use_zero_page", "1");
}

static void begin_scenario(const char *idx)
{
	out_str("{\"begin\":");
	out_str(idx);
	out_str("}\n");
	out_flush();
	memset(procs, 0, sizeof(procs));
	for (size_t i = 0; i < names_used; i++)
		names[used_slot[i]] = (struct name_slot){0, 0};
	memset(proc_name, 0, sizeof(proc_name));
	memset(map_name, 0, sizeof(map_name));
	names_used = 0;
	next_frame = 0;
	next_hold_id = 0;
	nheld = 0;
	state_used = 0;
	scenario_failed = 0;
	cur_line = 0;
	reset_knobs();
	/* Fresh pipes per scenario, so nothing stale from a killed worker survives. */
	for (int p = 0; p < MAXPROC; p++) {
		if (pipe2(cmd_pipe[p], O_CLOEXEC) || pipe2(rep_pipe[p], O_CLOEXEC))
			die("pipe");
		procs[p].pidfd = procs[p].pagemap_fd = procs[p].mem_fd = -1;
	}
	read_counters(stat_base, vm_base);
	read_dsplit_counters(dsplit_base, dsplit_vm_base);
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0)
		worker(0);
	attach(0, pid);
}

static void end_scenario(const char *idx)
{
	for (int p = 0; p < MAXPROC; p++)
		if (procs[p].state == 1) {
			/* A process holding pins exits by itself, unpinning first (a killed one's ring
			 * would unpin later, from a workqueue, into the next scenario's counters). */
			struct cmd c = {OP_EXIT, 0, 0, 0, 0};
			if (!procs[p].nhold ||
			    write(cmd_pipe[p][1], &c, sizeof(c)) != (ssize_t)sizeof(c))
				kill(procs[p].pid, SIGKILL);
			wait_exit(p);
		}
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	for (int p = 0; p < MAXPROC; p++) {
		close(cmd_pipe[p][0]);
		close(cmd_pipe[p][1]);
		close(rep_pipe[p][0]);
		close(rep_pipe[p][1]);
	}
	out_str("{\"end\":");
	out_str(idx);
	out_str("}\n");
	out_flush();
}

static int split(char *line, char **tok, int max)
{
	int n = 0;
	for (char *s = strtok(line, " \t\r"); s && n < max; s = strtok(NULL, " \t\r"))
		tok[n++] = s;
	return n;
}

/* Touch the stack pages the workers and the controller will use, while THP is off. */
static void __attribute__((noinline)) pretouch_stack(void)
{
	volatile char buf[256 << 10];
	for (size_t i = 0; i < sizeof(buf); i += 512)
		buf[i] = 0;
}

/* ---------------------------------------------------------------- the swap device */

/*
 * `pageout` needs swap. The runner puts zram and the modules it depends on into the initramfs
 * (decompressed, dependencies first) and lists them in /modules, one file name a line; they
 * are loaded here with finit_module(). zram0 gets a 1G disk (logical size: zram stores only
 * the compressed pages) with the lzo-rle compressor when the kernel has it (every line does;
 * the default stays otherwise), a swap header written here (mkswap's one page: the
 * "SWAPSPACE2" signature at the end of the page, version 1, the last page number; see
 * union swap_header in include/linux/swap.h) and swapon(). zram is a SWP_SYNCHRONOUS_IO
 * device (swapon sets it from the block device's BLK_FEAT_SYNCHRONOUS), which decides the
 * swap-in path of do_swap_page(). Swap readahead is cut to one page (vm.page-cluster = 0:
 * swap_vma_ra_win() then returns 1) so that a swap-in never brings neighbours into the swap
 * cache, and zswap is kept off (below) so that every page goes to zram.
 */
#define ZRAM_BYTES (1ULL << 30)
static void setup_swap(void)
{
	static char list[4096];
	int fd = open("/modules", O_RDONLY);
	if (fd < 0) {
		dprintf(2, "cowcore-probe: no /modules: no swap device\n");
		return;
	}
	ssize_t n = read(fd, list, sizeof(list) - 1);
	close(fd);
	list[n > 0 ? n : 0] = 0;
	char *save = NULL, path[128];
	for (char *name = strtok_r(list, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
		snprintf(path, sizeof(path), "/%s", name);
		int mfd = open(path, O_RDONLY | O_CLOEXEC);
		if (mfd < 0 || (syscall(SYS_finit_module, mfd, "", 0) && errno != EEXIST)) {
			dprintf(2, "cowcore-probe: cannot load %s: %s\n", name, strerror(errno));
			if (mfd >= 0)
				close(mfd);
			return;
		}
		close(mfd);
	}
	/*
	 * zswap must stay off, and its parameter untouched while it is off: after a write of
	 * even "N" to /sys/module/zswap/parameters/enabled, alloc_swap_folio() (6.13+) never
	 * swapped a large folio in again (seen on 7.3: `swpin` 64K stayed 0 with the write and
	 * counted without it), as when zswap_never_enabled() is false. Debian boots with zswap
	 * off; it is switched off only if it is on.
	 */
	char zs[4] = "";
	int zfd0 = open("/sys/module/zswap/parameters/enabled", O_RDONLY);
	if (zfd0 >= 0) {
		if (read(zfd0, zs, sizeof(zs) - 1) < 0)
			zs[0] = 0;
		close(zfd0);
	}
	if (zs[0] == 'Y') {
		write_file("/sys/module/zswap/parameters/enabled", "N");
		dprintf(2, "cowcore-probe: zswap was on: switched off (no large swap-in)\n");
	}
	write_file("/proc/sys/vm/page-cluster", "0");
	write_file("/sys/block/zram0/comp_algorithm", "lzo-rle");
	if (write_file("/sys/block/zram0/disksize", "1073741824")) {
		dprintf(2, "cowcore-probe: cannot size zram0\n");
		return;
	}
	uint64_t dev = 0;
	char devbuf[32] = "";
	int dfd = open("/sys/block/zram0/dev", O_RDONLY);
	if (dfd >= 0) {
		ssize_t k = read(dfd, devbuf, sizeof(devbuf) - 1);
		devbuf[k > 0 ? k : 0] = 0;
		close(dfd);
		unsigned ma = 0, mi = 0;
		if (sscanf(devbuf, "%u:%u", &ma, &mi) == 2)
			dev = makedev(ma, mi);
	}
	mknod("/dev/zram0", S_IFBLK | 0600, (dev_t)dev); /* devtmpfs may not have made it yet */
	int zfd = open("/dev/zram0", O_RDWR | O_CLOEXEC);
	if (zfd < 0) {
		dprintf(2, "cowcore-probe: cannot open /dev/zram0: %s\n", strerror(errno));
		return;
	}
	static unsigned char header[PAGE_SIZE];
	uint32_t info[3] = {1, (uint32_t)(ZRAM_BYTES / PAGE_SIZE - 1), 0}; /* version, last_page,
									      nr_badpages */
	memset(header, 0, sizeof(header));
	memcpy(header + 1024, info, sizeof(info));
	memcpy(header + PAGE_SIZE - 10, "SWAPSPACE2", 10);
	if (pwrite(zfd, header, sizeof(header), 0) != (ssize_t)sizeof(header) || fsync(zfd)) {
		dprintf(2, "cowcore-probe: cannot write the swap header\n");
		close(zfd);
		return;
	}
	close(zfd);
	if (swapon("/dev/zram0", 0)) {
		dprintf(2, "cowcore-probe: swapon /dev/zram0: %s\n", strerror(errno));
		return;
	}
	have_swap = 1;
}

static void setup_system(void)
{
	mkdir("/proc", 0755);
	mkdir("/sys", 0755);
	mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL) && errno != EBUSY) {
		mknod("/dev/ttyS1", S_IFCHR | 0600, makedev(4, 65));
		mknod("/dev/console", S_IFCHR | 0600, makedev(5, 1));
	}
	int con = open("/dev/console", O_RDWR);
	if (con >= 0) {
		dup2(con, 1);
		dup2(con, 2);
	}
	out_fd = open("/dev/ttyS1", O_WRONLY | O_NOCTTY);
	if (out_fd < 0)
		die("open /dev/ttyS1");
	struct termios t;
	if (tcgetattr(out_fd, &t) == 0) {
		cfmakeraw(&t);
		cfsetospeed(&t, B115200);
		tcsetattr(out_fd, TCSANOW, &t);
	}
	kpageflags_fd = open("/proc/kpageflags", O_RDONLY);
	kpagecount_fd = open("/proc/kpagecount", O_RDONLY);
	if (kpageflags_fd < 0 || kpagecount_fd < 0)
		die("open /proc/kpageflags or /proc/kpagecount");
	/* Large sparse mappings (up to 1G plus guards) must not fail on commit accounting. */
	write_file("/proc/sys/vm/overcommit_memory", "1");
	/* `pin` needs io_uring (kernels since 6.6 can switch it off; 0 is the default) and `ref`
	 * keeps a pipe per 1M of its range open. */
	write_file("/proc/sys/kernel/io_uring_disabled", "0");
	struct rlimit nofile = {1 << 16, 1 << 16};
	setrlimit(RLIMIT_NOFILE, &nofile);
	/*
	 * khugepaged must never collapse behind a scenario's back: make its scans rare, tiny and
	 * impossible to succeed (mm/khugepaged.c hpage_collapse_scan_pmd() refuses with any none,
	 * shared or swap PTE when the max_ptes_* limits are 0). It is started once here, with
	 * nothing to scan, so that its first pass happens now.
	 */
	write_file(THP "khugepaged/scan_sleep_millisecs", "4294967295");
	write_file(THP "khugepaged/alloc_sleep_millisecs", "4294967295");
	write_file(THP "khugepaged/pages_to_scan", "8");
	write_file(THP "khugepaged/max_ptes_none", "0");
	write_file(THP "khugepaged/max_ptes_swap", "0");
	write_file(THP "khugepaged/max_ptes_shared", "0");
	write_file(THP "khugepaged/defrag", "0");
	/*
	 * DAMON_STAT (6.17+, on by default in Debian's 7.x kernels) samples random folios: its
	 * short references make a COW fault copy a page it would have reused, and it clears
	 * accessed bits (smaps Referenced). Switch it off; kernels without it have no such file.
	 */
	if (write_file("/sys/module/damon_stat/parameters/enabled", "N") == 0)
		dprintf(2, "cowcore-probe: DAMON_STAT switched off\n");
	detect_pmd_only();
	setup_swap();
	reset_knobs();
	/* Touch every buffer now, with every THP size off, so that the probe's own memory is
	 * small pages that never fault during a scenario. */
	memset(state_pool, 0, sizeof(state_pool));
	memset(names, 0, sizeof(names));
	memset(used_slot, 0, sizeof(used_slot));
	memset(outbuf, 0, sizeof(outbuf));
	memset(vmstat_buf, 0, sizeof(vmstat_buf));
	memset(smaps_buf, 0, sizeof(smaps_buf));
	memset(kflags_block, 0, sizeof(kflags_block));
	memset(range_pfn, 0, sizeof(range_pfn));
	memset(pvm_buf, 0, sizeof(pvm_buf));
	memset(pvm_iov, 0, sizeof(pvm_iov));
	memset(held, 0, sizeof(held));
	pretouch_stack();
}

/*
 * The kernel starts /init with its boot-time THP setting (Debian's kernels boot with enabled=
 * always), so the C library's start-up writes, before main(), can fault a 2M THP into the
 * probe's large .bss, depending only on where the linker placed the variables. Every worker
 * inherits such a THP by fork and the first COW write to it splits the PMD (vmstat
 * thp_split_pmd and thp_deferred_split_page then count in the first scenario: seen on 6.1).
 * So PID 1 first switches every THP size off and executes itself again: the new image's
 * memory is faulted with THP off and is all small pages. The marker in the environment stops
 * the second start from doing it again.
 */
#define REEXEC_MARK "COWCORE_PROBE_THP_OFF"
static void reexec_without_thp(char **argv)
{
	char path[128];
	mkdir("/sys", 0755);
	if (mount("sysfs", "/sys", "sysfs", 0, NULL) == 0) {
		write_file(THP "enabled", "never");
		for (int s = 0; s < NSIZES; s++) {
			snprintf(path, sizeof(path), THP "hugepages-%ukB/enabled", size_kb[s]);
			write_file(path, "never");
		}
		umount("/sys");
	}
	setenv(REEXEC_MARK, "1", 1);
	execv(argv[0], argv);
	/* Could not execute ourselves: go on (the first scenario may then count a split). */
}

int main(int argc, char **argv)
{
	static char input[INPUT_MAX];
	if (argc > 0 && !getenv(REEXEC_MARK))
		reexec_without_thp(argv);
	setup_system();
	memset(input, 0, sizeof(input));
	int fd = open("/scenarios", O_RDONLY);
	if (fd < 0)
		die("open /scenarios");
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, input + len, sizeof(input) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	input[len] = 0;
	char idx[32] = "";
	char *save = NULL;
	for (char *line = strtok_r(input, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *tok[16];
		int ntok = split(line, tok, 16);
		if (ntok == 0)
			continue;
		char kind = tok[0][0];
		if (kind == 'S') {
			snprintf(idx, sizeof(idx), "%s", ntok > 1 ? tok[1] : "0");
			begin_scenario(idx);
		} else if (kind == 'Z') {
			end_scenario(idx);
		} else if (kind == 'P' && ntok >= 3) {
			int p = parse_idx(tok[1], MAXPROC);
			if (p >= 0)
				snprintf(proc_name[p], NAMELEN, "%s", tok[2]);
		} else if (kind == 'M' && ntok >= 3) {
			int m = parse_idx(tok[1], MAXMAP);
			if (m >= 0)
				snprintf(map_name[m], NAMELEN, "%s", tok[2]);
		} else if (scenario_failed) {
			continue;
		} else if (kind == 'K' && ntok >= 4 && pmd_only) {
			cur_line = atoi(tok[1]);
			pmd_only_knob(tok[2], tok[3]);
		} else if (kind == 'K' && ntok >= 4) {
			char path[160];
			cur_line = atoi(tok[1]);
			snprintf(path, sizeof(path), THP "%s", tok[2]);
			if (write_file(path, tok[3]))
				scenario_error("cannot write %s to %s", tok[3], path);
		} else if (kind == 'X' && ntok >= 2) {
			cur_line = atoi(tok[1]);
			print_stats();
			out_flush();
		} else if (kind == 'D' && ntok >= 2) {
			/* drop_caches: drop_slab() runs every shrinker, the deferred-split one among
			 * them (deferred_split_scan() in mm/huge_memory.c); split folios free their
			 * unmapped pages, whose names retire. */
			cur_line = atoi(tok[1]);
			if (write_file("/proc/sys/vm/drop_caches", "2"))
				scenario_error("cannot write 2 to /proc/sys/vm/drop_caches");
			else
				retire_unmapped();
		} else if (kind == 'C' && ntok >= 4) {
			cur_line = atoi(tok[1]);
			int p = parse_idx(tok[2], MAXPROC);
			if (p < 0)
				die("bad process index");
			process_statement(p, tok + 3, ntok - 3);
			if (!scenario_failed)
				retire_unmapped();
		}
	}
	out_str("{\"done\":true}\n");
	out_flush();
	tcdrain(out_fd);
	sync();
	reboot(RB_POWER_OFF);
	return 0;
}
