"""Compile one model's trees to machine code, in a child process of the service.

    python -m service.treecompile MODEL_FILE OUTPUT_FILE raw|proba

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
    if len(argv) != 3 or argv[2] not in ("raw", "proba"):
        print(f"usage: python -m service.treecompile MODEL_FILE OUTPUT_FILE raw|proba (got {argv})",
              file=sys.stderr)  # fmt: skip
        return 2
    model_file, output, kind = argv
    os.nice(10)
    import lleaves  # noqa: PLC0415 - heavy; only in the child

    # Inlining each tree into its block: one row is answered about 2.4x faster, for about
    # 4x the compile time (a 700-tree model: ~60 s instead of ~15 s; the child peaks near
    # 1.5 GB instead of 650 MB). Off the request path, once per version, cached.
    lleaves.Model(model_file=model_file).compile(
        cache=output, raw_score=kind == "raw", finline=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
