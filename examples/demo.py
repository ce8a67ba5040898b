"""procscope's demo: a small multi-process pipeline (grows as the instrumentors land)."""

from __future__ import annotations

import multiprocessing as mp


def work(n: int) -> int:
    return n * n


def main() -> None:
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        print("squares:", pool.map(work, range(5)))


if __name__ == "__main__":
    main()
