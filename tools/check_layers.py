#!/usr/bin/env python3
"""Checks that no layer of tendril includes a header of a layer above it.

Layers, bottom to top (docs/design/layers.md): context (L0), greenlet (L1), hub (L2),
sync and task (L3), net and io (L4), monkey (L5). A source file belongs to the layer of its
folder under src/ or include/tendril/; it may include headers of its own layer and of layers
below. Applications (apps/, lab/, tools/) may include anything.
"""
import pathlib
import re
import sys

LAYER = {"context": 0, "greenlet": 1, "hub": 2, "sync": 3, "task": 3, "net": 4, "io": 4,
         "monkey": 5}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def layer_of_path(rel):
    parts = rel.parts
    if parts[0] == "src" and len(parts) > 2:
        return LAYER.get(parts[1])
    if parts[0] == "include" and len(parts) > 3 and parts[1] == "tendril":
        return LAYER.get(parts[2])
    return None


def layer_of_include(inc):
    parts = inc.split("/")
    if parts[0] == "tendril" and len(parts) > 2:
        return LAYER.get(parts[1])
    if len(parts) > 1 and parts[0] in LAYER:
        return LAYER[parts[0]]
    return None


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    bad = []
    for path in sorted(list(root.glob("src/**/*")) + list(root.glob("include/tendril/**/*"))):
        if path.suffix not in (".hpp", ".cpp", ".h", ".S", ".in"):
            continue
        rel = path.relative_to(root)
        mine = layer_of_path(rel)
        if mine is None:
            continue
        for inc in INCLUDE.findall(path.read_text(errors="replace")):
            theirs = layer_of_include(inc)
            if theirs is not None and theirs > mine:
                bad.append(f"{rel}: includes {inc} (layer {theirs} above its own layer {mine})")
    for line in bad:
        print(line)
    print(f"check_layers: {'FAILED' if bad else 'ok'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
