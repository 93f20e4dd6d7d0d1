#!/usr/bin/env python3
# Prints the call chain berth-demo-svc returns for GET / (JSON on argv[1]) as an indented tree:
# which app, in which environment, at which address and tag answered each hop.
import json
import sys


def walk(node, depth=0):
    print("  " * depth + "%-10s env=%-9s ip=%-12s tag=%s %s %s" % (node["app"], node.get("env"), node.get("ip"),
          node.get("tag"), node.get("version", ""), node.get("error", "")))
    for child in node.get("calls", []):
        walk(child, depth + 1)


walk(json.loads(sys.argv[1]))
