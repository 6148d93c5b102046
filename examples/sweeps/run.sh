#!/bin/sh
# Regenerates every number and figure of docs/tutorial.md from the specs beside this
# script: the sweeps' outputs under out/, the comparison tables as text under out/, the
# figures under docs/figures/. Run from anywhere; COWCORE overrides the command
# (default: "python3 -m cowcore", which works from a checkout with PYTHONPATH=python).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
COWCORE=${COWCORE:-python3 -m cowcore}
cd "$here"
rm -f out/*.parquet out/*.csv out/*.txt

# 1. BGSAVE of a 4 GiB heap: 4K pages, 64K mTHP, 2M THP, each on 6.12 and 6.15
$COWCORE sweep bgsave.toml --no-progress
$COWCORE sweep bgsave.toml --no-progress --set thp.64K=always
$COWCORE sweep bgsave.toml --no-progress --set thp.enabled=always

$COWCORE compare kernel=6.12 kernel=6.15 --in out/bgsave.parquet \
    --metrics current_cow_peak_kb,memory_peak_kb,memory_end_kb,copies,reuses,pmd_splits,faults \
    > out/bgsave-compare.txt
# 4K and 64K (2M draws the same line as 64K)
$COWCORE plot timeline out/bgsave.parquet --metric memory_used_kb --x time_s \
    --where thp.enabled=never -o "$root/docs/figures/bgsave-timeline.png"
$COWCORE plot memory out/bgsave.parquet --metric memory_peak_kb \
    -o "$root/docs/figures/bgsave-memory.png"

# 2. the two MM-id slots: a pool of 1 to 8 processes
$COWCORE sweep prefork-slots.toml --no-progress
$COWCORE compare kernel=6.12 kernel=6.15 --in out/prefork-slots.parquet \
    --metrics copies,reuses,avoidable_copies,slot_overflow_copies,total_memory_kb \
    > out/prefork-slots-compare.txt
$COWCORE plot memory out/prefork-slots.parquet --metric reuses --x workers \
    -o "$root/docs/figures/prefork-reuses.png"

# the tables the tutorial quotes, from the outputs
python3 "$here/tables.py" > out/tables.md
