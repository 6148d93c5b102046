/* SPDX-License-Identifier: MIT
 *
 * replay: runs a small memory trace through cowcore and prints what every access did.
 *
 *   replay TRACE [PROFILE]      (PROFILE: "6.15" by default, or "6.12")
 *
 * Trace lines (see trace.txt): mmap ADDR LEN | thp ORDER MODE | read ADDR [PID] |
 * write ADDR [PID] | fork [PID] | exit PID | munmap ADDR LEN [PID] |
 * mprotect ADDR LEN PROT [PID]; '#' starts a comment. Numbers are C literals (0x...).
 * PID is 1 unless given. The program prints one line per access (outcome, reason,
 * physical address), then the events of the run counted by kind, and exits 0, or 1 with
 * the library's message on the first failed call.
 */
#include "cowcore.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops on a failed call: the status name and the library's message. */
static void check(cowcore_status s, const cowcore_machine *m, const char *what, int line) {
    if (s != COWCORE_STATUS_OK) {
        fprintf(stderr, "line %d: %s: %s: %s\n", line, what, cowcore_status_name(s),
                cowcore_last_error(m));
        exit(1);
    }
}

/* A number in C syntax (decimal, 0x hex, 0 octal), or exit. */
static uint64_t number(const char *text, int line) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 0);
    if (errno != 0 || *end != '\0' || text[0] == '-') {
        fprintf(stderr, "line %d: not a number: %s\n", line, text);
        exit(1);
    }
    return (uint64_t)v;
}

/* Counts the recorded events by kind, draining them through a small buffer. */
static void drain(cowcore_machine *m, uint64_t counts[256], uint64_t *total) {
    cowcore_event_t buf[8];
    size_t n;
    do {
        check(cowcore_take_events(m, buf, 8, &n), m, "take_events", 0);
        for (size_t i = 0; i < n; i++) {
            counts[buf[i].kind]++;
        }
        *total += n;
    } while (n == 8);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s TRACE [PROFILE]\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (f == NULL) {
        perror(argv[1]);
        return 2;
    }
    const char *profile = argc > 2 ? argv[2] : "6.15";
    cowcore_machine *m = NULL;
    check(cowcore_machine_new(64u << 20, 4, profile, &m), NULL, "machine_new", 0);
    check(cowcore_record_events(m, true), m, "record_events", 0);
    printf("cowcore %s, profile %s\n", cowcore_version(), profile);

    uint64_t counts[256] = {0};
    uint64_t total = 0;
    char text[256];
    int line = 0;
    while (fgets(text, sizeof text, f) != NULL) {
        line++;
        char *hash = strchr(text, '#');
        if (hash != NULL) {
            *hash = '\0';
        }
        char *tok[6];
        int k = 0;
        for (char *t = strtok(text, " \t\r\n"); t != NULL && k < 6; t = strtok(NULL, " \t\r\n")) {
            tok[k++] = t;
        }
        if (k == 0) {
            continue;
        }
        const char *op = tok[0];
        if ((strcmp(op, "read") == 0 || strcmp(op, "write") == 0) && (k == 2 || k == 3)) {
            uint64_t addr = number(tok[1], line);
            uint32_t pid = k == 3 ? (uint32_t)number(tok[2], line) : 1;
            bool write = op[0] == 'w';
            cowcore_access_t r;
            check(cowcore_access(m, pid, addr, write, (uint64_t)line, &r), m, op, line);
            printf("%-5s pid %" PRIu32 " 0x%012" PRIx64 ": %s/%s", op, pid, addr,
                   cowcore_outcome_name(r.outcome), cowcore_reason_name(r.reason));
            if (r.phys == COWCORE_NO_PHYS) {
                printf(" phys -");
            } else {
                printf(" phys 0x%" PRIx64, r.phys);
            }
            printf(" order %u faults %u%s%s\n", (unsigned)r.order, (unsigned)r.faults,
                   (r.flags & COWCORE_ACCESS_COPIED) ? " copied" : "",
                   (r.flags & COWCORE_ACCESS_ZEROED) ? " zeroed" : "");
        } else if (strcmp(op, "mmap") == 0 && k == 3) {
            check(cowcore_mmap_fixed(m, 1, number(tok[1], line), number(tok[2], line), NULL), m,
                  op, line);
        } else if (strcmp(op, "thp") == 0 && k == 3) {
            check(cowcore_set_thp_size(m, (uint32_t)number(tok[1], line), tok[2]), m, op, line);
        } else if (strcmp(op, "fork") == 0 && k <= 2) {
            uint32_t child;
            uint32_t pid = k == 2 ? (uint32_t)number(tok[1], line) : 1;
            check(cowcore_fork(m, pid, &child), m, op, line);
            printf("fork  pid %" PRIu32 " -> %" PRIu32 "\n", pid, child);
        } else if (strcmp(op, "exit") == 0 && k == 2) {
            check(cowcore_exit(m, (uint32_t)number(tok[1], line)), m, op, line);
        } else if (strcmp(op, "munmap") == 0 && (k == 3 || k == 4)) {
            uint32_t pid = k == 4 ? (uint32_t)number(tok[3], line) : 1;
            check(cowcore_munmap(m, pid, number(tok[1], line), number(tok[2], line)), m, op,
                  line);
        } else if (strcmp(op, "mprotect") == 0 && (k == 4 || k == 5)) {
            uint32_t pid = k == 5 ? (uint32_t)number(tok[4], line) : 1;
            check(cowcore_mprotect(m, pid, number(tok[1], line), number(tok[2], line), tok[3]),
                  m, op, line);
        } else {
            fprintf(stderr, "line %d: cannot parse the %s line\n", line, op);
            return 1;
        }
        drain(m, counts, &total); /* as a simulator would, between its own steps */
    }
    fclose(f);

    printf("events %" PRIu64 "\n", total);
    for (int kind = 0; kind < 256; kind++) {
        if (counts[kind] != 0) {
            printf("  %-20s %" PRIu64 "\n", cowcore_event_kind_name((uint8_t)kind), counts[kind]);
        }
    }
    cowcore_stats_t s;
    check(cowcore_stats(m, &s), m, "stats", 0);
    printf("stats faults read %" PRIu64 " write %" PRIu64 " wp %" PRIu64 " cow_copy %" PRIu64
           " pgreuse %" PRIu64 "\n",
           s.faults_read, s.faults_write, s.faults_wp, s.cow_copy, s.pgreuse);
    check(cowcore_check(m), m, "check", 0);
    cowcore_machine_free(m);
    return 0;
}
