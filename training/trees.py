"""A version's trees compiled to a shared library, ``trees.so``, in the training Job.

Serving pods load it (after checking it against LightGBM on probe rows) and score with it
instead of LightGBM's predictor: on this machine about 15% more one-transaction requests a
second through the whole service (decision 0013). Compiling here keeps LLVM and its
working memory (~1.5 GB for a 580-tree model with inlining) off the serving pods.

The steps, each in a child or a tool of its own:

1. ``python -m service.treecompile MODEL trees.o raw|proba x86-64``: lleaves emits the
   trees as position-independent machine code for any x86-64 CPU (no host features);
2. ``ld -shared -z noexecstack``: GNU ld links the object into a shared library (LLVM
   does not write one), the only thing here that needs more than the Python environment
   (Debian's ``binutils``; the training image has it);
3. the library is loaded and must give LightGBM's scores on
   :func:`service.models.probe_features` to :data:`service.models.COMPILED_TOLERANCE`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from service.artifact import MODEL_FILE, TREES_FILE, CompiledTrees
from service.models import (
    COMPILED_TOLERANCE,
    LibraryScorer,
    LightGBMScorer,
    max_difference,
    run_compiler,
)

CompileTrees = Literal["auto", "on", "off"]
"""``on``: publish compiled trees or fail; ``auto``: when this machine can; ``off``: never."""

PORTABLE_CPUS: Final = {"x86_64": "x86-64", "aarch64": "generic"}
"""The LLVM CPU per machine whose code runs on every CPU of that machine."""

LINK_TIMEOUT_SECONDS: Final = 120.0
COMPILERS: Final = ("lleaves", "llvmlite")


class TreesCompileError(Exception):
    """The trees could not be compiled, linked or proven equal to LightGBM's."""


@dataclass(frozen=True)
class CompiledLibrary:
    data: bytes
    description: CompiledTrees


def compiler_problem() -> str | None:
    """Why this machine cannot compile trees for publishing, or None when it can."""
    machine = platform.machine()
    if machine not in PORTABLE_CPUS:
        return f"no portable CPU target known for {machine}"
    if platform.system() != "Linux":
        return f"shared libraries are linked for Linux only, this is {platform.system()}"
    if importlib.util.find_spec("lleaves") is None:
        return "lleaves is not installed"
    if shutil.which("ld") is None:
        return "no linker: ld (Debian's binutils) is not on PATH"
    return None


Output = Literal["raw_score", "probability"]


def compile_library(model_text: str, *, output: Output) -> CompiledLibrary:
    """Compile ``model_text``'s trees to ``trees.so`` for any CPU of this machine's kind.

    Raises :class:`TreesCompileError` saying which step failed and why.
    """
    problem = compiler_problem()
    if problem is not None:
        raise TreesCompileError(problem)
    target = PORTABLE_CPUS[platform.machine()]
    with tempfile.TemporaryDirectory(prefix="modelrollout-trees-") as tmp:
        work = Path(tmp)
        model_file = work / MODEL_FILE
        model_file.write_text(model_text)
        obj = work / "trees.o"
        try:
            run_compiler(model_file, obj, raw_score=output == "raw_score", target_cpu=target)
        except RuntimeError as exc:
            raise TreesCompileError(str(exc)) from exc
        library = work / TREES_FILE
        _link(["ld", "-shared", "-z", "noexecstack", "-o", str(library), str(obj)])
        reference = LightGBMScorer(model_file, num_threads=1, raw=output == "raw_score")
        try:
            try:
                scorer = LibraryScorer(
                    library, "forest_root", reference.n_classes, reference.n_features
                )
            except (OSError, AttributeError) as exc:
                raise TreesCompileError(f"the linked library does not load: {exc}") from exc
            diff = max_difference(scorer, reference)
        finally:
            reference.close()
        if not diff <= COMPILED_TOLERANCE:
            raise TreesCompileError(
                f"the compiled trees differ from LightGBM by {diff:.3g} (> {COMPILED_TOLERANCE:g})"
            )
        versions = ", ".join(f"{d} {importlib.metadata.version(d)}" for d in COMPILERS)
        return CompiledLibrary(
            data=library.read_bytes(),
            description=CompiledTrees(
                machine=platform.machine(),
                system=platform.system(),
                target_cpu=target,
                output=output,
                compiler=versions,
                max_difference=diff,
            ),
        )


def _link(command: list[str]) -> None:
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=LINK_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        took = f"{LINK_TIMEOUT_SECONDS:.0f} s"
        raise TreesCompileError(f"the linker took longer than {took}") from None
    except OSError as exc:
        raise TreesCompileError(f"the linker did not start: {exc}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-500:]
        raise TreesCompileError(f"the linker exited with {proc.returncode}: {detail}")
