"""Turn this template into a new project: copy it, rename the `diabetes_regression` sample, drop the rest.

    python bootstrap/bootstrap.py --directory ../my-project --name churn
    python bootstrap/bootstrap.py --in-place --name churn [--drop-ff] [--drop-sample-data]

Nothing is written half-way: the result is built in a temporary folder next to the target and moved into place
at the end, so any refusal or failure leaves the target untouched. See bootstrap/README.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE = "diabetes_regression"
TEMPLATE_ROOT = Path(__file__).resolve().parent.parent
NEVER_COPIED = (".git", ".venv", "local")
# The bootstrapper itself is a template tool: the new project does not carry it (nor its tests).
TOOL_PATHS = re.compile(r"^(bootstrap/|tests/test_bootstrap[^/]*$)")
TOOL_REF = re.compile(r"(?<![A-Za-z0-9_])bootstrap(/|\.py)|test_bootstrap")
RESERVED = frozenset(
    {"ml_service", "ff", "data", "tests", "docs", "bootstrap", "environment_setup", "local", "bench", SAMPLE}
)
# A reference to the ff sample: the word "ff" with no letter or digit either side ("ff/", "train-ff",
# "test_ff", "--use-case ff", "FF_CONFIG"), never inside a word ("diff", "off", "0xff").
FF_REF = re.compile(r"(?<![A-Za-z0-9])ff(?![A-Za-z0-9])", re.IGNORECASE)
FF_PATH_PART = re.compile(r"^(test_)?ff([-_.].*)?$", re.IGNORECASE)
DATA_README = """# data

The sample data shipped with the template was removed when this project was bootstrapped. The scripts that
generate it stay: until your use case reads your own data, `make` regenerates the sample file it needs (for
example `data/diabetes.csv` from scikit-learn's bundled data) before training and testing.

Put your own data here (or point the pipeline inputs at it): one file per data set, for example
`data/<your_data>.csv`, and update the default input paths of your use case's pipeline
(`ml_service/pipelines/definition.py`) and its tests. Large or private data should not be committed:
keep it in Azure ML datastores or blob storage and list local copies in `.gitignore`.
"""


class BootstrapError(Exception):
    """A refusal: the message is the one line printed on stderr."""


# ---------------------------------------------------------------- names


def name_variants(name: str) -> dict[str, str]:
    """Every spelling of the sample name that is renamed, mapped to the same spelling of `name`.

    snake (diabetes_regression), UPPER (DIABETES_REGRESSION), dashed (diabetes-regression), CamelCase
    (DiabetesRegression) and Title (Diabetes Regression). Lower-case prose ("diabetes regression") is left
    alone: it describes the data-science problem, not the package.
    """
    words = [w for w in name.split("_") if w]
    sample_words = SAMPLE.split("_")
    return {
        "_".join(sample_words).upper(): name.upper(),
        SAMPLE: name,
        "-".join(sample_words): "-".join(words) or name,
        "".join(w.capitalize() for w in sample_words): "".join(w.capitalize() for w in words) or name,
        " ".join(w.capitalize() for w in sample_words): " ".join(w.capitalize() for w in words) or name,
    }


def validate_name(name: str, reserved: Iterable[str] = RESERVED, installed: Iterable[str] = ()) -> str | None:
    """None if `name` can be the new package's name, else the rule it breaks (one line)."""
    if not name:
        return "invalid name: it is empty"
    if name[0].isdigit():
        return f"invalid name {name!r}: it starts with a digit"
    bad = sorted({c for c in name if not (c.islower() and c.isascii() or c.isdigit() or c == "_")})
    if bad:
        return (
            f"invalid name {name!r}: it contains {''.join(bad)!r}; use only lowercase letters, digits and underscores"
        )
    if keyword.iskeyword(name):
        return f"invalid name {name!r}: it is a Python keyword"
    if name in set(reserved):
        return f"invalid name {name!r}: it clashes with the top-level folder {name!r} of the template"
    if name in sys.stdlib_module_names:
        return f"invalid name {name!r}: it clashes with the Python standard-library module {name!r}"
    if name in set(installed):
        return f"invalid name {name!r}: it clashes with the installed package {name!r} (it would shadow it)"
    return None


def installed_top_level_names() -> set[str]:
    """Import names of the packages installed where this runs (only meaningful from the project's venv)."""
    try:
        from importlib.metadata import packages_distributions

        return {n for n in packages_distributions() if n.isidentifier()}
    except Exception:  # pragma: no cover - a broken environment must not block bootstrapping
        return set()


def rewrite_text(text: str, name: str) -> tuple[str, int]:
    """Replace every spelling of the sample name by the same spelling of `name`; returns (text, count)."""
    variants = name_variants(name)
    pattern = re.compile("|".join(re.escape(k) for k in sorted(variants, key=len, reverse=True)))
    return pattern.subn(lambda m: variants[m.group(0)], text)


def plan_renames(paths: Iterable[str], name: str) -> dict[str, str]:
    """{old: new} for every relative path whose folder or file names contain a spelling of the sample name."""
    plan = {}
    for path in paths:
        new, count = rewrite_text(path, name)
        if count:
            plan[path] = new
    targets = [plan.get(p, p) for p in paths]
    clashes = sorted({t for t in targets if targets.count(t) > 1})
    if clashes:
        raise BootstrapError(f"renaming would give two files the same path: {clashes[0]}")
    return plan


# ---------------------------------------------------------------- dropping a part (the ff sample, the tool)


def is_ff_path(path: str) -> bool:
    """A file of the ff sample: a path part named ff, ff-*, ff_*, ff.* or test_ff* (e.g. ff/, ff-ci.yml)."""
    return any(FF_PATH_PART.match(part) for part in path.split("/"))


def module_name(path: str) -> str | None:
    """The dotted module a Python file defines (``a/b/c.py`` → ``a.b.c``, ``a/b/__init__.py`` → ``a.b``)."""
    if not path.endswith(".py"):
        return None
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if parts and all(part.isidentifier() for part in parts) else None


def module_level_imports(text: str) -> set[str]:
    """Modules a file imports when it is imported (its top-level statements, not imports inside functions)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def dependents_of_dropped(texts: dict[str, str], dropped_modules: set[str]) -> dict[str, str]:
    """Python files that import a dropped module at module level, directly or through another such file.

    They cannot work without it, so they go too (a lazy import inside a function stays: it is only reached
    through the dropped part). Returns {path: the dropped module it needed}.
    """
    gone = set(dropped_modules)
    result: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for path, text in texts.items():
            if path in result:
                continue
            for module in module_level_imports(text):
                hit = next((d for d in gone if module == d or module.startswith(d + ".")), None)
                if hit is not None:
                    result[path] = hit
                    own = module_name(path)
                    if own:
                        gone.add(own)
                    changed = True
                    break
    return result


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def drop_lines_generic(text: str, ref: re.Pattern[str]) -> tuple[str, list[str]]:
    lines = text.splitlines(keepends=True)
    kept = [line for line in lines if not ref.search(line)]
    removed = [line.strip() for line in lines if ref.search(line)]
    return "".join(kept), [f"line: {r}" for r in removed]


def drop_makefile(text: str, ref: re.Pattern[str]) -> tuple[str, list[str]]:
    """Drop rules named after the part or whose whole recipe mentions it; else single mentioning lines."""
    physical = text.splitlines(keepends=True)
    logical: list[str] = []  # backslash-continued lines joined (kept with their newlines)
    for line in physical:
        if logical and logical[-1].rstrip("\n").endswith("\\"):
            logical[-1] += line
        else:
            logical.append(line)
    target_re = re.compile(r"^([^\t#=\s][^=]*?):(?![=])(.*)$", re.DOTALL)
    var_re = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?:[:?+!]|::)?=")
    removed: list[str] = []
    dropped_names: set[str] = set()

    def refs(line: str) -> bool:
        if ref.search(line):
            return True
        words = set(re.findall(r"[A-Za-z0-9_.\-]+", line))
        return bool(words & dropped_names)

    # Variables whose value mentions the part are dropped, and so is whatever uses them (to a fixed point).
    changed = True
    while changed:
        changed = False
        for line in logical:
            m = var_re.match(line)
            if m and not line.startswith("\t") and m.group(1) not in dropped_names and refs(line):
                dropped_names.add(m.group(1))
                changed = True
    # Group lines into rules.
    out: list[str] = []
    i = 0
    while i < len(logical):
        line = logical[i]
        m = target_re.match(line) if not line.startswith("\t") and not var_re.match(line) else None
        if m is None:
            if var_re.match(line) and not line.startswith("\t"):
                name = var_re.match(line).group(1)
                if name in dropped_names:
                    removed.append(f"variable {name}")
                    i += 1
                    continue
            out.append(line)
            i += 1
            continue
        j = i + 1
        while j < len(logical) and logical[j].startswith("\t"):
            j += 1
        targets = m.group(1).split()
        recipe = logical[i + 1 : j]
        special = all(t.startswith(".") for t in targets)
        if not special and (any(ref.search(t) for t in targets) or (recipe and all(refs(r) for r in recipe))):
            dropped_names.update(targets)
            removed.append(f"rule {' '.join(targets)}")
            while out and out[-1].lstrip().startswith("#") and not out[-1].startswith("\t"):
                out.pop()  # the comment block describing the rule
            i = j
            continue
        out.append(line)
        out.extend(r for r in recipe if not refs(r))
        removed.extend(f"recipe line in {targets[0]}: {r.strip()}" for r in recipe if refs(r))
        i = j
    # Prerequisite lists (including .PHONY) lose the dropped targets.
    final = []
    for line in out:
        m = target_re.match(line) if not line.startswith("\t") and not var_re.match(line) else None
        if m:
            prereqs = m.group(2)
            words = prereqs.split()
            keep = [w for w in words if w not in dropped_names and not ref.search(w)]
            if keep != words:
                removed.extend(f"prerequisite {w} of {m.group(1)}" for w in words if w not in keep)
                line = f"{m.group(1)}:{' ' + ' '.join(keep) if keep else ''}\n"
        final.append(line)
    return "".join(final), removed


def drop_yaml(text: str, ref: re.Pattern[str]) -> tuple[str, list[str]]:
    """Drop the list item (step, job, stage, path) enclosing each mention; else the key and its children."""
    lines = text.splitlines(keepends=True)
    gone = [False] * len(lines)
    removed: list[str] = []

    def meaningful(k: int) -> bool:
        s = lines[k].strip()
        return bool(s) and not s.startswith("#") and not gone[k]

    def block_end(start: int, indent: int) -> int:
        k = start + 1
        while k < len(lines) and (not lines[k].strip() or _indent(lines[k]) > indent):
            k += 1
        return k

    def parent(k: int) -> int | None:
        ind = _indent(lines[k])
        for p in range(k - 1, -1, -1):
            if lines[p].strip() and not lines[p].strip().startswith("#") and _indent(lines[p]) < ind:
                return p
        return None

    for i, line in enumerate(lines):
        if gone[i] or not ref.search(line):
            continue
        if line.strip().startswith("#"):
            gone[i] = True
            removed.append(f"comment: {line.strip()}")
            continue
        # Inside a block scalar (script: |): drop the line only, unless it is the whole script.
        p = parent(i)
        if p is not None and re.search(r":\s*[|>][-+0-9]*\s*$", lines[p]):
            end = block_end(p, _indent(lines[p]))
            others = [k for k in range(p + 1, end) if k != i and meaningful(k)]
            if others:
                gone[i] = True
                removed.append(f"script line: {line.strip()}")
                continue
        # The nearest enclosing list item, at any depth.
        k: int | None = i
        while k is not None and not lines[k].lstrip().startswith("- "):
            k = parent(k)
        start = k if k is not None else i
        indent = _indent(lines[start])
        end = block_end(start, indent)
        for q in range(start, end):
            gone[q] = True
        removed.append(f"block: {lines[start].strip()}")
    # Keys left with no children (e.g. an emptied `include:`) go too.
    changed = True
    while changed:
        changed = False
        for i, line in enumerate(lines):
            if gone[i] or not re.match(r"^\s*(- )?[\w.\-\"']+:\s*$", line):
                continue
            nxt = next((k for k in range(i + 1, len(lines)) if meaningful(k)), None)
            ind = _indent(line) + (2 if line.lstrip().startswith("- ") else 0)
            if (
                nxt is None
                or _indent(lines[nxt]) <= ind
                and not (
                    lines[nxt].lstrip().startswith("- ")
                    and _indent(lines[nxt]) == ind
                    and not line.lstrip().startswith("- ")
                )
            ):
                if any(gone[k] for k in range(i + 1, (nxt if nxt is not None else len(lines)))):
                    gone[i] = True
                    changed = True
                    removed.append(f"emptied key: {line.strip()}")
    return "".join(line for k, line in enumerate(lines) if not gone[k]), removed


def drop_markdown(text: str, ref: re.Pattern[str]) -> tuple[str, list[str]]:
    """Drop sections whose heading mentions it, and table rows, list items, paragraphs, code lines that do."""
    lines = text.splitlines(keepends=True)
    gone = [False] * len(lines)
    removed: list[str] = []
    fence = [False] * len(lines)
    inside = False
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            fence[i] = True
            inside = not inside
        else:
            fence[i] = inside
    heading = re.compile(r"^(#{1,6})\s")
    item = re.compile(r"^(\s*)([-*+]|\d+[.)])\s")

    def plain(k: int) -> bool:
        s = lines[k]
        return (
            bool(s.strip())
            and not fence[k]
            and not heading.match(s)
            and not item.match(s)
            and not s.lstrip().startswith("|")
        )

    for i, line in enumerate(lines):
        if gone[i] or not ref.search(line):
            continue
        h = heading.match(line) if not fence[i] else None
        if fence[i]:
            gone[i] = True
            removed.append(f"code line: {line.strip()}")
        elif h:
            level = len(h.group(1))
            end = i + 1
            while end < len(lines) and not (
                not fence[end] and heading.match(lines[end]) and len(heading.match(lines[end]).group(1)) <= level
            ):
                end += 1
            for k in range(i, end):
                gone[k] = True
            removed.append(f"section: {line.strip()}")
        elif line.lstrip().startswith("|"):
            gone[i] = True
            removed.append(f"table row: {line.strip()}")
        else:
            m = item.match(line)
            if m is None:  # a line of an item's continuation, or of a paragraph
                start = i
                while start > 0 and plain(start - 1) and not gone[start - 1]:
                    start -= 1
                if start > 0 and item.match(lines[start - 1]) and _indent(lines[i]) > 0:
                    start -= 1
                    m = item.match(lines[start])
                if m is None:
                    end = i
                    while end + 1 < len(lines) and plain(end + 1):
                        end += 1
                    for k in range(start, end + 1):
                        gone[k] = True
                    removed.append(f"paragraph: {lines[start].strip()}")
                    continue
                i = start
            ind = len(m.group(1))
            end = i + 1
            while end < len(lines) and lines[end].strip() and not fence[end] and _indent(lines[end]) > ind:
                end += 1
            for k in range(i, end):
                gone[k] = True
            removed.append(f"list item: {lines[i].strip()}")
    out = "".join(line for k, line in enumerate(lines) if not gone[k])
    return re.sub(r"\n{3,}", "\n\n", out), removed


def _offsets(source: bytes) -> list[int]:
    starts = [0]
    for k, b in enumerate(source):
        if b == 10:
            starts.append(k + 1)
    return starts


def _defined_names(stmt: ast.stmt) -> set[str]:
    """Names a module-level statement defines (a function, a class, assigned variables)."""
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {stmt.name}
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "target", None)]
    return {n.id for t in targets if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)}


def _uses_any(stmt: ast.stmt, names: set[str]) -> bool:
    """Whether a statement reads one of `names` (a name in its code, or a parameter: a pytest fixture)."""
    return bool(names) and any(
        (isinstance(n, ast.Name) and n.id in names) or (isinstance(n, ast.arg) and n.arg in names)
        for n in ast.walk(stmt)
    )


def drop_python(text: str, ref: re.Pattern[str], is_test: bool) -> tuple[str, list[str]]:
    """Drop imports of the part, list/tuple/set elements and dict entries naming it; in tests, whole tests, and
    the tests that use a helper, fixture or constant dropped that way."""
    removed: list[str] = []
    gone_names: set[str] = set()  # module-level names of a test file dropped in an earlier pass
    for _ in range(50):
        source = text.encode()
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return text, removed
        starts = _offsets(source)

        def pos(line: int, col: int, starts: list[int] = starts) -> int:
            return starts[line - 1] + col

        def seg(node: ast.AST, source: bytes = source) -> str:
            return source[pos(node.lineno, node.col_offset) : pos(node.end_lineno, node.end_col_offset)].decode()

        edits: list[tuple[int, int, str]] = []
        defines: dict[tuple[int, int], set[str]] = {}  # edit span -> module-level names it removes
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if is_test and isinstance(node, ast.Module | ast.ClassDef) and isinstance(body, list):
                for stmt in body:
                    uses_gone = isinstance(node, ast.Module) and _uses_any(stmt, gone_names)
                    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                        inner = "\n".join(seg(s) for s in stmt.body)
                        if ref.search(inner) or ref.search(stmt.name) or uses_gone:
                            first = min([stmt.lineno] + [d.lineno for d in stmt.decorator_list])
                            span = (starts[first - 1], pos(stmt.end_lineno, stmt.end_col_offset))
                            edits.append((*span, stmt.name))
                            if isinstance(node, ast.Module):
                                defines[span] = _defined_names(stmt)
                    elif isinstance(node, ast.Module) and isinstance(stmt, ast.Assign | ast.AnnAssign):
                        if ref.search(seg(stmt)) or uses_gone:
                            span = (starts[stmt.lineno - 1], pos(stmt.end_lineno, stmt.end_col_offset))
                            edits.append((*span, "assignment"))
                            defines[span] = _defined_names(stmt)
            if is_test and isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(FF_PATH_PART.match(m.split(".")[0]) and ref.search(m) for m in mods):
                    edits.append((starts[node.lineno - 1], pos(node.end_lineno, node.end_col_offset), "import"))
            elts: list[ast.AST] = []
            if isinstance(node, ast.List | ast.Tuple | ast.Set):
                elts = list(node.elts)
            if isinstance(node, ast.Dict):
                for idx, key in enumerate(node.keys):
                    if key is not None and ref.search(seg(key)):
                        value = node.values[idx]
                        a, b = pos(key.lineno, key.col_offset), pos(value.end_lineno, value.end_col_offset)
                        nxt = node.keys[idx + 1] if idx + 1 < len(node.keys) else None
                        if nxt is not None:
                            b = pos(nxt.lineno, nxt.col_offset)
                        elif idx > 0:
                            prev = node.values[idx - 1]
                            a = pos(prev.end_lineno, prev.end_col_offset)
                        else:
                            b = _past_comma(source, b)
                        edits.append((a, b, "dict entry"))
            for idx, elt in enumerate(elts):
                if isinstance(elt, ast.Starred) or not ref.search(seg(elt)):
                    continue
                a, b = pos(elt.lineno, elt.col_offset), pos(elt.end_lineno, elt.end_col_offset)
                if idx + 1 < len(elts):
                    b = pos(elts[idx + 1].lineno, elts[idx + 1].col_offset)
                elif idx > 0:
                    a = pos(elts[idx - 1].end_lineno, elts[idx - 1].end_col_offset)
                else:
                    b = _past_comma(source, b)
                edits.append((a, b, "element"))
        if not edits:
            return text, removed
        # Apply the outermost edit of each overlapping group, last first.
        edits.sort(key=lambda e: (e[0], -e[1]))
        chosen: list[tuple[int, int, str]] = []
        for e in edits:
            if chosen and e[0] < chosen[-1][1]:
                continue
            chosen.append(e)
        out = source
        for a, b, what in reversed(chosen):
            removed.append(f"{what}: {out[a:b].decode().strip().splitlines()[0][:80]}")
            gone_names |= defines.get((a, b), set())
            out = out[:a] + out[b:]
        text = out.decode()
    return text, removed


def _past_comma(source: bytes, end: int) -> int:
    """Just past a trailing comma after `end` (spaces allowed before it), else `end`."""
    rest = source[end:]
    stripped = rest.lstrip(b" \t")
    return end + (len(rest) - len(stripped)) + 1 if stripped.startswith(b",") else end


def drop_json(text: str, ref: re.Pattern[str]) -> tuple[str, list[str]]:
    try:
        data = json.loads(text)
    except ValueError:
        return drop_lines_generic(text, ref)
    removed: list[str] = []

    def walk(value):  # returns (value, keep)
        if isinstance(value, str):
            return value, not ref.search(value)
        if isinstance(value, list):
            kept = []
            for v in value:
                nv, keep = walk(v)
                if keep:
                    kept.append(nv)
                else:
                    removed.append(f"element: {json.dumps(v)[:80]}")
            return kept, True
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                nv, keep = walk(v)
                if keep and not ref.search(k):
                    out[k] = nv
                else:
                    removed.append(f"key: {k}")
            return out, True
        return value, True

    new, _ = walk(data)
    if not removed:
        return text, removed
    m = re.search(r"\n( +)\S", text)
    dumped = json.dumps(new, indent=len(m.group(1)) if m else 2, ensure_ascii=False)
    return dumped + ("\n" if text.endswith("\n") else ""), removed


def drop_tokens(line: str, ref: re.Pattern[str]) -> str:
    """Remove option tokens naming the part (` --cov=ff`) and entries of enumerations (`` `a/`, `ff/` ``)."""

    def unless(m: re.Match[str]) -> str:
        return "" if ref.search(m.group(0)) else m.group(0)

    line = re.sub(r"[ \t]+-{1,2}[\w-]+=[^\s`'\"]*", unless, line)
    line = re.sub(r"(,[ \t]*|[ \t]+(and|or)[ \t]+)`[^`\n]*`", unless, line)
    return re.sub(r"`[^`\n]*`(,[ \t]*|[ \t]+(and|or)[ \t]+)", unless, line)


def drop_references(path: str, text: str, ref: re.Pattern[str]) -> tuple[str, list[str]]:
    """Remove what mentions a dropped part from one file, by the file's kind; returns (text, removed)."""
    base = path.rsplit("/", 1)[-1]
    if not ref.search(text):
        return text, []
    inline: list[str] = []
    if not base.endswith((".py", ".json")):
        lines = text.splitlines(keepends=True)
        for k, line in enumerate(lines):
            if ref.search(line):
                new = drop_tokens(line, ref)
                if new != line:
                    inline.append(f"inline: {line.strip()[:100]}")
                    lines[k] = new
        text = "".join(lines)
    text, removed = _drop_by_kind(path, base, text, ref)
    return text, inline + removed


def _drop_by_kind(path: str, base: str, text: str, ref: re.Pattern[str]) -> tuple[str, list[str]]:
    if not ref.search(text):
        return text, []
    if base == "Makefile" or base.endswith(".mk"):
        return drop_makefile(text, ref)
    if base.endswith((".yml", ".yaml")):
        return drop_yaml(text, ref)
    if base.endswith(".md"):
        return drop_markdown(text, ref)
    if base.endswith(".py"):
        is_test = path.startswith("tests/") or base.startswith("test_") or base == "conftest.py"
        return drop_python(text, ref, is_test)
    if base.endswith(".json"):
        return drop_json(text, ref)
    return drop_lines_generic(text, ref)


# ---------------------------------------------------------------- files


def git_files(template: Path) -> list[str]:
    """Tracked files plus untracked-but-not-ignored ones, relative, never .git/.venv/local."""
    try:
        out = []
        for extra in ([], ["--others", "--exclude-standard"]):
            res = subprocess.run(["git", "ls-files", "-z", *extra], cwd=template, capture_output=True, check=True)
            out += [p for p in res.stdout.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        raise BootstrapError(f"template {template} is not a git work tree (git ls-files failed)") from None
    files = []
    for p in sorted(set(out)):
        if p.split("/")[0] in NEVER_COPIED:
            continue
        full = template / p
        if full.is_symlink() or full.is_file():
            files.append(p)
    return files


def read_text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass
class Report:
    renamed: dict[str, str] = field(default_factory=dict)
    edited: dict[str, int] = field(default_factory=dict)
    dropped_files: list[str] = field(default_factory=list)
    dropped_refs: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"renamed {len(self.renamed)} paths:"]
        out += [f"  {a} -> {b}" for a, b in sorted(self.renamed.items())]
        out.append(f"edited {len(self.edited)} files (occurrences of the sample name replaced):")
        out += [f"  {p} ({n})" for p, n in sorted(self.edited.items())]
        if self.dropped_files:
            out.append(f"dropped {len(self.dropped_files)} files:")
            out += [f"  {p}" for p in self.dropped_files]
        if self.dropped_refs:
            out.append(f"removed references from {len(self.dropped_refs)} files:")
            for p, items in sorted(self.dropped_refs.items()):
                out += [f"  {p}: {item}" for item in items]
        if self.warnings:
            out.append("warnings (review these):")
            out += [f"  {w}" for w in self.warnings]
        return out


def build(template: Path, staging: Path, name: str, drop_ff: bool, drop_sample_data: bool) -> Report:
    """Write the new project into `staging` (an empty folder); touches nothing else."""
    report = Report()
    files = git_files(template)
    keep: list[str] = []
    for p in files:
        if TOOL_PATHS.match(p):
            report.dropped_files.append(p)
        elif drop_ff and is_ff_path(p):
            report.dropped_files.append(p)
        elif drop_sample_data and p.startswith("data/") and not p.endswith(".py"):  # generators stay
            report.dropped_files.append(p)
        else:
            keep.append(p)
    if drop_ff:
        dropped_modules = {"ff"} | {m for p in report.dropped_files if is_ff_path(p) and (m := module_name(p))}
        texts = {p: text for p in keep if p.endswith(".py") and (text := read_text(template / p)) is not None}
        for path, needed in sorted(dependents_of_dropped(texts, dropped_modules).items()):
            keep.remove(path)
            report.dropped_files.append(f"{path} (imports {needed})")
    report.renamed = plan_renames(keep, name)
    refs = [TOOL_REF] + ([FF_REF] if drop_ff else [])
    python_edits: list[str] = []
    for p in keep:
        src = template / p
        new_path = report.renamed.get(p, p)
        dst = staging / new_path
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(rewrite_text(os.readlink(src), name)[0], dst)
            continue
        text = read_text(src)
        if text is None:
            shutil.copy2(src, dst)
            continue
        new_text, count = rewrite_text(text, name)
        if count:
            report.edited[new_path] = count
        for ref in refs:
            new_text, removed = drop_references(new_path, new_text, ref)
            if removed:
                report.dropped_refs.setdefault(new_path, []).extend(removed)
        if new_text != text and new_path.endswith(".py"):
            python_edits.append(new_path)
        dst.write_text(new_text, encoding="utf-8")
        shutil.copymode(src, dst)
    if drop_sample_data:
        (staging / "data").mkdir(exist_ok=True)
        (staging / "data" / "README.md").write_text(DATA_README, encoding="utf-8")
    if drop_ff:  # `ff` is no longer first-party, so import blocks that still name it sort differently
        python_edits = sorted({*python_edits, *(p.relative_to(staging).as_posix() for p in staging.rglob("*.py"))})
    tidy_python(staging, python_edits, report)
    # What still mentions a dropped part is listed for review.
    leftover_refs = [(TOOL_REF, "the bootstrap tool")] + ([(FF_REF, "the ff sample")] if drop_ff else [])
    removed_data = [p for p in report.dropped_files if p.startswith("data/")]
    for f in sorted(staging.rglob("*")):
        if not f.is_file() or f.is_symlink():
            continue
        rel = f.relative_to(staging).as_posix()
        text = read_text(f)
        if text is None:
            continue
        for ref, what in leftover_refs:
            for n, line in enumerate(text.splitlines(), 1):
                if ref.search(line):
                    report.warnings.append(f"{rel}:{n}: still mentions {what}: {line.strip()[:80]}")
        for d in removed_data:
            if d in text and rel != "data/README.md":
                report.warnings.append(f"{rel}: refers to removed sample data {d}")
    return report


def tidy_python(root: Path, paths: list[str], report: Report) -> None:
    """Re-sort imports, drop imports left unused and re-format the edited Python files (ruff, if found)."""
    if not paths:
        return
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        report.warnings.append("ruff not found: edited Python files were not re-sorted or re-formatted")
        return
    cmds = [
        [ruff, "check", "--no-cache", "--fix", "--select", "I,F401", "--quiet", *paths],
        [ruff, "format", "--no-cache", "--quiet", *paths],
    ]
    for cmd in cmds:
        res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        if res.returncode not in (0, 1):
            report.warnings.append(f"{' '.join(cmd[1:3])} failed: {res.stderr.strip()[:200]}")
    res = subprocess.run([ruff, "check", "--no-cache", "--quiet", *paths], cwd=root, capture_output=True, text=True)
    for line in res.stdout.splitlines():
        if line.strip() and ":" in line:
            report.warnings.append(f"ruff: {line.strip()}")


# ---------------------------------------------------------------- checks and moving into place


def reserved_names(files: Iterable[str]) -> set[str]:
    names = set(RESERVED)
    for p in files:
        top = p.split("/")[0]
        names.add(top if "/" in p else top.removesuffix(".py"))
    return names


def check_target(template: Path, target: Path) -> None:
    t = target.resolve()
    if t == template or template in t.parents:
        raise BootstrapError(f"target {target} is inside the template {template}; choose a folder outside it")
    if t.exists() and not t.is_dir():
        raise BootstrapError(f"target {target} exists and is not a folder")
    if t.is_dir() and any(t.iterdir()):
        raise BootstrapError(f"target {target} is not empty; choose a new or empty folder")
    if not t.parent.is_dir():
        raise BootstrapError(f"the parent folder of the target, {t.parent}, does not exist")


def check_clean(template: Path) -> None:
    res = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=template, capture_output=True)
    if res.returncode != 0 or res.stdout.strip():
        raise BootstrapError(
            "--in-place needs a template with no uncommitted changes to tracked files: commit or stash first"
        )


def move_into_place(staging: Path, target: Path) -> None:
    if target.is_dir():
        target.rmdir()  # empty, checked before
    os.replace(staging, target)


def replace_in_place(staging: Path, template: Path, old_files: list[str]) -> None:
    """Swap the template's copied files for the staged ones (.git, .venv, local/ and ignored files stay)."""
    new_files = [f.relative_to(staging).as_posix() for f in staging.rglob("*") if f.is_file() or f.is_symlink()]
    for p in old_files:
        (template / p).unlink(missing_ok=True)
    for p in new_files:
        (template / p).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / p, template / p)
    for p in sorted({str(Path(p).parent) for p in old_files}, key=len, reverse=True):
        d = template / p
        while d != template and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    shutil.rmtree(staging, ignore_errors=True)


def run(args: argparse.Namespace) -> Report:
    template = Path(args.template).resolve()
    if not (template / SAMPLE).is_dir():
        raise BootstrapError(f"template {template} has no {SAMPLE}/ folder (already bootstrapped?)")
    files = git_files(template)
    problem = validate_name(args.name, reserved_names(files), installed_top_level_names())
    if problem:
        raise BootstrapError(problem)
    if args.in_place:
        check_clean(template)
        parent = template.parent
    else:
        target = Path(args.directory)
        check_target(template, target)
        parent = target.resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=".bootstrap-", dir=parent))
    try:
        report = build(template, staging, args.name, args.drop_ff, args.drop_sample_data)
        if args.in_place:
            replace_in_place(staging, template, files)
        else:
            move_into_place(staging, target.resolve())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bootstrap.py",
        description="Copy this template into a new project; rename the diabetes_regression sample to NAME.",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--directory", metavar="DIR", help="new or empty folder (outside the template) to create")
    where.add_argument("--in-place", action="store_true", help="rename the template itself (needs a clean git tree)")
    p.add_argument("--name", required=True, help="the new use-case package name, e.g. churn_model")
    p.add_argument("--drop-ff", action="store_true", help="remove the ff many-models sample and what refers to it")
    p.add_argument(
        "--drop-sample-data",
        action="store_true",
        help="remove the sample data under data/ (keeps a data/README.md)",
    )
    p.add_argument("--template", default=str(TEMPLATE_ROOT), help=argparse.SUPPRESS)
    p.add_argument("--quiet", action="store_true", help="print only the summary line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        report = run(args)
    except BootstrapError as err:
        print(f"bootstrap: error: {err}", file=sys.stderr)
        return 2
    where = "in place" if args.in_place else f"into {args.directory}"
    if not args.quiet:
        print("\n".join(report.lines()))
    print(f"bootstrapped {args.name!r} {where}; next steps: see the template's bootstrap/README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
