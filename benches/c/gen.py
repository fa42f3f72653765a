#!/usr/bin/env python3
"""Writes a C library project twice over: as Orchfile.toml for orch and build.ninja for ninja.

Usage: gen.py DIR [SOURCES] [HEADERS]

- src/fI.c (SOURCES of them, default 200) each define one function and include three of the
  HEADERS (default 20) headers include/hJ.h, chosen by a fixed rule, plus <stdlib.h>.
- Every header defines a constant that the sources including it use, so editing the value
  really changes the objects of exactly those sources.
- Both tools compile each source with the same command (`cc -O2 -Iinclude -c SRC -o OBJ -MD
  -MF DEP`), read the dependency file it writes (ninja: `deps = gcc`, orch: `depfile`), and
  archive the objects with `ar rcsD` into build/libgen.a.
The output is byte-for-byte the same for the same arguments.
"""
import os
import sys


def headers_of(i, h):
    return sorted({i % h, (i * 7 + 3) % h, (i * 13 + 5) % h})


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    h = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    if n < 1 or h < 1:
        sys.exit("SOURCES and HEADERS must be positive")
    os.makedirs(os.path.join(root, "src"), exist_ok=True)
    os.makedirs(os.path.join(root, "include"), exist_ok=True)
    for j in range(h):
        with open(os.path.join(root, "include", f"h{j}.h"), "w") as f:
            f.write(f"#ifndef GEN_H{j}_H\n#define GEN_H{j}_H\n\n")
            f.write(f"#define H{j}_SALT 1\n\n")
            f.write(f"static inline unsigned long h{j}_mix(unsigned long x) {{\n")
            f.write(f"    return (x ^ (x >> {j % 7 + 3})) * 0x9E3779B97F4A7C15UL + H{j}_SALT;\n")
            f.write("}\n\n#endif\n")
    for i in range(n):
        hs = headers_of(i, h)
        with open(os.path.join(root, "src", f"f{i}.c"), "w") as f:
            f.write("#include <stdlib.h>\n\n")
            for j in hs:
                f.write(f'#include "h{j}.h"\n')
            f.write("\n#define SALT 1\n\n")
            f.write(f"unsigned long f{i}(unsigned long x) {{\n")
            f.write("    unsigned long acc = SALT;\n")
            f.write("    for (int k = 0; k < 8; k++) {\n")
            for j in hs:
                f.write(f"        acc = h{j}_mix(acc + x + (unsigned long)k);\n")
            f.write("    }\n    return acc;\n}\n")
    cc = "cc -O2 -Iinclude"
    with open(os.path.join(root, "Orchfile.toml"), "w") as f:
        f.write("[orch]\nformat = 1\n\n")
        f.write("[phase.compile]\n")
        f.write('shard   = { strategy = "files", source = "src/*.c", merge = "none" }\n')
        f.write(f'run     = "{cc} -c {{shard.input}} -o {{output}} -MD -MF {{depfile}}"\n')
        f.write('outputs = ["build/obj/{shard.key}.o"]\n')
        f.write('depfile = "build/obj/{shard.key}.d"\n\n')
        f.write("[phase.archive]\n")
        f.write('run     = "ar rcsD {output} {inputs}"\n')
        f.write('inputs  = ["build/obj/**/*.o"]\n')
        f.write('outputs = ["build/libgen.a"]\n')
    with open(os.path.join(root, "build.ninja"), "w") as f:
        f.write(f"rule cc\n  command = {cc} -c $in -o $out -MD -MF $out.d\n")
        f.write("  depfile = $out.d\n  deps = gcc\n\n")
        f.write("rule ar\n  command = rm -f $out && ar rcsD $out $in\n\n")
        objs = []
        for i in range(n):
            obj = f"build/obj/src/f{i}.c.o"
            objs.append(obj)
            f.write(f"build {obj}: cc src/f{i}.c\n")
        # orch sorts {inputs} by path; give ninja the same member order.
        objs.sort()
        f.write(f"\nbuild build/libgen.a: ar {' '.join(objs)}\n\ndefault build/libgen.a\n")


if __name__ == "__main__":
    main()
