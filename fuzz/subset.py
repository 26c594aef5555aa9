#!/usr/bin/env python3
"""Pick at most LIMIT inputs of a fuzz corpus that keep as much coverage as possible.

`cargo fuzz cmin` keeps every input that adds a feature (an edge at a new hit count), which
after a 10-minute run is thousands of files; the committed corpus should stay small. This
reads the control file of a set-cover merge, in which libFuzzer records every feature of
every input, and picks greedily: the seeds (files not named by their SHA-1), then the inputs
adding the most new edges, then the most new features, smallest first on ties.

    FUZZ=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/config
    $FUZZ -set_cover_merge=1 -merge_control_file=/tmp/ctl /tmp/out FULL_CORPUS_DIR
    python3 subset.py /tmp/ctl 300 > picked.txt     # then copy those files to corpus/config/
"""

import heapq
import os
import re
import sys


def main(control, limit):
    lines = open(control).read().split("\n")
    n = int(lines[0])
    files = lines[2 : 2 + n]
    feats = {}
    for line in lines[2 + n :]:
        p = line.split()
        if p and p[0] == "FT":
            feats[int(p[1])] = frozenset(map(int, p[2:]))
    size = {i: os.path.getsize(files[i]) for i in feats}
    # libFuzzer's counter features are edge * 8 + hit-count bucket.
    edges = {i: frozenset(f // 8 for f in s) for i, s in feats.items()}

    picked = [i for i in feats if not re.fullmatch("[0-9a-f]{40}", os.path.basename(files[i]))]

    def greedy(sets):
        covered = set().union(*(sets[i] for i in picked))
        heap = [(-len(sets[i] - covered), size[i], i) for i in sets if i not in picked]
        heapq.heapify(heap)
        while heap and len(picked) < limit:
            _, s, i = heapq.heappop(heap)
            gain = len(sets[i] - covered)
            if gain == 0:
                continue
            if heap and gain < -heap[0][0]:  # stale priority: re-queue with the real gain
                heapq.heappush(heap, (-gain, s, i))
                continue
            picked.append(i)
            covered |= sets[i]
        return len(covered), len(set().union(*sets.values()))

    e = greedy(edges)
    f = greedy(feats)
    print(f"{len(picked)} inputs: {e[0]} of {e[1]} edges, {f[0]} of {f[1]} features", file=sys.stderr)
    print("\n".join(files[i] for i in picked))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
