#!/usr/bin/env python3
"""Fails when a README command builds before it installs what the build needs.

The README's two commands (scripts/quickstart.sh, scripts/test.sh) must work on a machine that
has only the Rust toolchain, Python and apt. ofctl's build compiles librdkafka, which needs
cmake, make and g++; `scripts/dev-stack.sh install` provides them. So in each script the first
`dev-stack.sh install` must come before the first `cargo` command (a new machine once failed
on `cargo build` two minutes in with "is `cmake` not installed?"). dev-stack.sh itself must
keep installing the build tools.
"""
import re
import sys

SCRIPTS = ["scripts/quickstart.sh", "scripts/test.sh"]
BUILD_TOOLS = ["cmake", "make", "g++"]


def first_line(lines, pattern):
    for n, line in enumerate(lines, 1):
        code = line.split("#", 1)[0]
        if re.search(pattern, code):
            return n
    return None


def main():
    problems = []
    for script in SCRIPTS:
        lines = open(script, encoding="utf-8").read().splitlines()
        install = first_line(lines, r"dev-stack\.sh\s+install\b")
        cargo = first_line(lines, r"(^|[;&|(\s])cargo\s")
        if install is None:
            problems.append(f"{script}: never runs `scripts/dev-stack.sh install`")
        elif cargo is not None and cargo < install:
            problems.append(
                f"{script}:{cargo}: runs cargo before `dev-stack.sh install` (line {install}); "
                "a new machine has no cmake yet"
            )
    stack = open("scripts/dev-stack.sh", encoding="utf-8").read()
    for tool in BUILD_TOOLS:
        if not re.search(rf"have {re.escape(tool)} \|\| apt\+=\(", stack):
            problems.append(f"scripts/dev-stack.sh: install no longer provides `{tool}` for the build")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
