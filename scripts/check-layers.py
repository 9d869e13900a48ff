#!/usr/bin/env python3
"""Fails when a module of src/ imports one in its own layer or above (docs/architecture.md).

Layers, lowest first. A module may use only modules of lower layers; modules of one layer
(the providers, say) never use each other, so the graph has no cycle by construction. A
reference is any `crate::a` path (or a name inside `use crate::{...}`) outside `#[cfg(test)]`
code and comments; nodes are top-level modules, and `providers::<system>` each on its own.

Usage: scripts/check-layers.py [SRC]   (exit 1 and one line per violation on failure)
"""
import os
import re
import sys

LAYERS = [
    # pure data and pure functions
    ["duration", "path", "json"],
    ["redact", "interpolate"],
    ["resource"],
    ["kind"],
    ["plan"],
    # the target config: generic sections, credentials from the environment
    ["config"],
    # process-wide clients, one per endpoint, shared by tenants
    ["shared"],
    # the provider API (trait, errors, REST and NATS clients) and process-wide services
    ["provider", "lock", "metrics"],
    # one plug-in per live system
    [
        "providers::connect",
        "providers::kafka",
        "providers::mongo",
        "providers::nats",
        "providers::pinot",
        "providers::tactical",
    ],
    # the only module that names every provider; the emulators, which share the providers'
    # captured server defaults (providers::pinot::server_defaults)
    ["registry", "sandbox"],
    ["manifest", "apply"],
    ["export", "engine"],
    ["jobs"],
    ["watch"],
    ["cli"],
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}
SPLIT = {"providers"}
ROOT_FILES = {"lib", "main"}


def node_of(src, parts):
    if not parts:
        return None
    if parts[0] in SPLIT and len(parts) > 1 and os.path.isdir(os.path.join(src, parts[0], parts[1])):
        return f"{parts[0]}::{parts[1]}"
    return parts[0]


def strip(text):
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    text = re.sub(r"//[^\n]*", "", text)  # comments and docs may name any module
    return text


def edges(src):
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel and rel[0] in ROOT_FILES:
                continue
            me = node_of(src, rel)
            text = strip(open(path, encoding="utf-8").read())
            targets = [m.split("::") for m in re.findall(r"crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)?)", text)]
            for group in re.findall(r"use crate::\{([^}]*)\}", text):
                for item in group.split(","):
                    item = item.strip()
                    if re.match(r"[a-z_]", item):
                        targets.append(item.split("::")[:2])
            for t in targets:
                n = node_of(src, t)
                if n and n != me and n != "providers":
                    out.setdefault(me, {}).setdefault(n, path)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    problems = []
    graph = edges(src)
    modules = set(graph) | {n for v in graph.values() for n in v}
    for m in sorted(modules - set(RANK)):
        problems.append(f"{m}: not in any layer of scripts/check-layers.py; add it where it belongs")
    for a, targets in sorted(graph.items()):
        for b, path in sorted(targets.items()):
            if a in RANK and b in RANK and RANK[b] >= RANK[a]:
                where = "its own layer" if RANK[b] == RANK[a] else "a layer above it"
                problems.append(f"{path}: `{a}` uses `{b}`, which is in {where}")
    for p in problems:
        print(p)
    n_edges = sum(len(v) for v in graph.values())
    print(f"check-layers: {len(problems)} problem(s), {len(modules)} modules, {n_edges} imports", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
