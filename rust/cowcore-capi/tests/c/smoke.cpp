// The header compiles as C++ (extern "C" guards, typed enums) and links: a C++ simulator's
// view of one COW fault. Exits 0 when every check holds.
#include "cowcore.h"

#include <cstdio>
#include <cstring>
#include <vector>

#define REQUIRE(x)                                                                   \
    do {                                                                             \
        if (!(x)) {                                                                  \
            std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #x);             \
            return 1;                                                                \
        }                                                                            \
    } while (0)

int main() {
    cowcore_machine *m = nullptr;
    REQUIRE(cowcore_machine_new(8u << 20, 4, "6.15", &m) == COWCORE_STATUS_OK);
    cowcore_status s = cowcore_machine_new(8u << 20, 4, "2.4", &m); // a typed enum in C++
    REQUIRE(s == COWCORE_STATUS_INVALID_ARGUMENT);
    REQUIRE(std::strstr(cowcore_last_error(nullptr), "2.4") != nullptr);
    uint64_t a = 0;
    REQUIRE(cowcore_mmap(m, 1, 4096, &a) == COWCORE_STATUS_OK);
    std::vector<uint64_t> addrs{a, a, a + 4096};
    std::vector<uint8_t> writes{1, 0, 1};
    std::vector<cowcore_access_t> out(addrs.size());
    REQUIRE(cowcore_access_batch(m, 1, addrs.data(), writes.data(), 0, addrs.size(), 5,
                                 out.data()) == COWCORE_STATUS_OK);
    REQUIRE(out[0].outcome == COWCORE_OUTCOME_ANON_ALLOC && out[0].faults == 1);
    REQUIRE(out[1].outcome == COWCORE_OUTCOME_NO_FAULT && out[1].phys == out[0].phys);
    REQUIRE(out[2].outcome == COWCORE_OUTCOME_SEGFAULT && out[2].phys == COWCORE_NO_PHYS);
    uint32_t child = 0;
    REQUIRE(cowcore_fork(m, 1, &child) == COWCORE_STATUS_OK);
    cowcore_access_t r;
    REQUIRE(cowcore_access(m, child, a, true, 6, &r) == COWCORE_STATUS_OK);
    REQUIRE(r.outcome == COWCORE_OUTCOME_COW_COPY && r.reason == COWCORE_REASON_SMALL_OTHER_REFS);
    REQUIRE((r.flags & COWCORE_ACCESS_COPIED) != 0);
    REQUIRE(std::strcmp(cowcore_reason_name(r.reason), "SMALL_OTHER_REFS") == 0);
    REQUIRE(cowcore_exit(m, 7) == COWCORE_STATUS_NO_SUCH_PROCESS);
    REQUIRE(sizeof(cowcore_access_t) == 32 && sizeof(cowcore_event_t) == 72);
    cowcore_machine_free(m);
    std::puts("ok");
    return 0;
}
