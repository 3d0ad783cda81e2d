"""MinHash signatures: our vectorised numpy implementation vs datasketch and rensa.

    pip install datasketch rensa          # only for this comparison; not project dependencies
    python bench/minhash_impls.py         # 20,000 short captions, 256 permutations, 1 process

Times only the signature step (shingling is shared and done first), on the same shingle
sets, one process. Writes its block into bench/RESULTS.md (machine and date included).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import WORDS  # noqa: E402
from run_bench import _marks, write_results  # noqa: E402

from dj_synth.operators import get_operator  # noqa: E402


def captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 20))) for _ in range(n)]


def timed(fn, shingle_sets) -> float:
    start = time.perf_counter()
    for s in shingle_sets:
        fn(s)
    return time.perf_counter() - start


def _numpy_signature(perm: int):
    """The vectorised numpy MinHash dj-synth used before switching to rensa (kept to compare)."""
    import hashlib

    import numpy as np

    rng = np.random.RandomState(42)
    a = rng.randint(1, 1 << 32, size=perm, dtype=np.uint64)
    b = rng.randint(0, 1 << 32, size=perm, dtype=np.uint64)
    mersenne, max_hash = np.uint64((1 << 61) - 1), np.uint64(0xFFFFFFFF)

    def signature(shingles: set[str]) -> bytes:
        hv = np.fromiter(
            (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")
             for s in shingles), dtype=np.uint64, count=len(shingles),
        )  # fmt: skip
        return (
            (((hv[:, None] * a + b) % mersenne) & max_hash).min(axis=0).astype(np.uint32).tobytes()
        )

    return signature


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--perm", type=int, default=256)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    op = get_operator("document_minhash_deduplicator")(
        tokenization="space", window_size=3, num_permutations=args.perm
    )
    sets = [op.shingles(t) for t in captions(args.n)]
    sets = [s for s in sets if s]
    rows = [
        ("dj-synth op.signature (rensa RMinHash, packed to bytes)", timed(op.signature, sets)),
        (
            "numpy, blake2b + universal hashing (dj-synth before)",
            timed(_numpy_signature(args.perm), sets),
        ),
    ]
    try:
        from datasketch import MinHash

        def ds(s):
            m = MinHash(num_perm=args.perm, seed=1)
            m.update_batch([x.encode() for x in s])
            return m.hashvalues

        rows.append(("datasketch MinHash.update_batch", timed(ds, sets)))
    except ImportError:
        rows.append(("datasketch (not installed)", float("nan")))
    try:
        import rensa

        def rmh(s):
            m = rensa.RMinHash(num_perm=args.perm, seed=1)
            m.update(list(s))
            return m.digest()

        def cmh(s):
            m = rensa.CMinHash(num_perm=args.perm, seed=1)
            m.update(list(s))
            return m.digest()

        rows.append(("rensa RMinHash (Rust)", timed(rmh, sets)))
        rows.append(("rensa CMinHash (Rust, C-MinHash)", timed(cmh, sets)))
    except ImportError:
        rows.append(("rensa (not installed)", float("nan")))
    ours = rows[0][1]
    lines = [
        f"Machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}; "
        f"date {dt.date.today().isoformat()}.",
        f"Command: `python bench/minhash_impls.py -n {args.n} --perm {args.perm}` "
        f"({len(sets):,} short captions of 3-20 words, word 3-grams, one process).",
        "",
        "| implementation | seconds | signatures/s | vs dj-synth |",
        "|---|---|---|---|",
    ]
    for name, sec in rows:
        rate = len(sets) / sec if sec == sec else float("nan")
        lines.append(f"| {name} | {sec:.2f} | {rate:,.0f} | {ours / sec:.2f}x |")
    begin, end = _marks("minhash", "impls")
    block = "\n".join([begin, "## MinHash signature implementations", "", *lines, end])
    print(block)
    if not args.no_write:
        write_results(block, "minhash", "impls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
