"""Compile one model's trees to machine code, in a child process of the service.

    python -m service.treecompile MODEL_FILE OUTPUT_FILE raw|proba [TARGET_CPU]

TARGET_CPU is an LLVM CPU name (``x86-64``: any x86-64 machine) for code that must run on
other machines than this one, as the training Job publishes it (decision 0013), with no
CPU features beyond the name's; without it the code is for this host's CPU.

:func:`service.models.compile_trees` runs this and then loads ``OUTPUT_FILE``: compiling
in the serving process would leave LLVM's working memory in it (measured: RSS from 207 to
813 MiB for one 860-tree model, against 271 MiB when the same code is loaded from the
file), and a crash in the compiler would take the server down with it. The child lowers
its own priority so that serving keeps the CPU it needs.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[2] not in ("raw", "proba"):
        print("usage: python -m service.treecompile MODEL_FILE OUTPUT_FILE raw|proba "
              f"[TARGET_CPU] (got {argv})", file=sys.stderr)  # fmt: skip
        return 2
    model_file, output, kind = argv[:3]
    target = {"target_cpu": argv[3], "target_cpu_features": ""} if len(argv) == 4 else {}
    os.nice(10)
    import lleaves  # noqa: PLC0415 - heavy; only in the child

    # Inlining each tree into its block: one row is answered about 2.4x faster, for about
    # 4x the compile time (a 700-tree model: ~60 s instead of ~15 s; the child peaks near
    # 1.5 GB instead of 650 MB). Off the request path, once per version, cached.
    lleaves.Model(model_file=model_file).compile(
        cache=output, raw_score=kind == "raw", finline=True, **target
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
