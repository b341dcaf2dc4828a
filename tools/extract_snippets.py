#!/usr/bin/env python3
"""Extracts every complete C++ example (a ```cpp block with `int main`) from the README and
docs/ into OUTDIR/<doc>_<n>.cpp, so that the build compiles and the tests run each one.

    extract_snippets.py SOURCE_DIR OUTDIR
Prints the written file names, one per line (CMake reads them).
"""
import pathlib
import re
import sys

BLOCK = re.compile(r"^```cpp\n(.*?)^```", re.M | re.S)


def main():
    src = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    docs = [src / "README.md"] + sorted((src / "docs").rglob("*.md"))
    written = []
    for doc in docs:
        stem = re.sub(r"[^A-Za-z0-9]+", "_", str(doc.relative_to(src).with_suffix("")))
        for n, code in enumerate(BLOCK.findall(doc.read_text()), start=1):
            if "int main" not in code:
                continue
            path = out / f"{stem}_{n}.cpp"
            text = f"// Extracted from {doc.relative_to(src)}, example {n}.\n{code}"
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
            written.append(path.name)
    print(";".join(written), end="")


if __name__ == "__main__":
    main()
