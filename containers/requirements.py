"""Print the requirements of iworkflow and some of its extras, one per line, from pyproject.toml.

The images install these in a layer of their own before copying the code, so that a change to the code
rebuilds only the last, small layer:  python3 requirements.py pyproject.toml amqp,stomp
"""
from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    """The project's dependencies plus those of ``extras``, self-references (``iworkflow[a,b]``) expanded."""
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    optional = project.get("optional-dependencies", {})
    name = project["name"]
    found = list(project.get("dependencies", []))
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"{pyproject} has no extra {extra!r}; known: {', '.join(sorted(optional))}")
        seen.add(extra)
        for req in optional[extra]:
            own = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", req.replace(" ", ""))
            if own:
                todo.extend(own.group(1).split(","))
            elif req not in found:
                found.append(req)
    return found


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python3 requirements.py PYPROJECT EXTRA[,EXTRA...]")
    print("\n".join(requirements(sys.argv[1], [e for e in sys.argv[2].split(",") if e])))
