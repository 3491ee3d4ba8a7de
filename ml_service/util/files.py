"""Small file helpers: writes that are all-or-nothing, and content hashes for lineage."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> None:
    """Write a temporary file beside `path`, then rename: readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: Any) -> None:
    write_atomic(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


FILE_MAP = "files.sha256.json"


def folder_sha256(folder: Path) -> dict[str, str]:
    """{relative posix path: sha256} of every file in a model folder, sorted; hidden files and the file map itself
    are left out. Registration records this map and packaging checks it, so both use this one function."""
    folder = Path(folder)
    return {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != FILE_MAP and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


def file_map_digest(files: dict[str, str]) -> str:
    """One sha256 for a whole file map (its canonical JSON): a registry tag that pins every file of a version."""
    return hashlib.sha256(json.dumps(dict(sorted(files.items())), separators=(",", ":")).encode()).hexdigest()


def verify_folder(folder: Path, files: dict[str, str]) -> list[str]:
    """Problems found comparing a folder with its recorded file map (missing, changed or extra files); empty: ok."""
    actual = folder_sha256(folder)
    problems = [f"{path}: missing" for path in sorted(set(files) - set(actual))]
    problems += [f"{path}: sha256 differs" for path in sorted(set(files) & set(actual)) if files[path] != actual[path]]
    problems += [f"{path}: not in the registered file map" for path in sorted(set(actual) - set(files))]
    return problems
