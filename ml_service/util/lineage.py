"""Where a model came from: the commit (and whether the tree had uncommitted changes) and the CI build."""

from __future__ import annotations

import os
import subprocess

GIT_CLEAN, GIT_DIRTY, GIT_UNKNOWN = "clean", "dirty", "unknown"


def _git(args: list[str], cwd: str | None) -> str | None:
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def git_commit(cwd: str | None = None) -> str:
    """The commit being built: GIT_COMMIT (what an Azure ML job is given, its snapshot has no .git), the CI's
    variable (Azure DevOps, GitHub Actions), else git, else empty."""
    for name in ("GIT_COMMIT", "BUILD_SOURCEVERSION", "GITHUB_SHA"):
        if os.environ.get(name):
            return os.environ[name]
    out = _git(["rev-parse", "HEAD"], cwd)
    return out.strip() if out is not None else ""


def git_tree(cwd: str | None = None) -> str:
    """'clean' when the working tree matches the commit, 'dirty' when tracked or new files differ (the model was
    then built from code no commit holds), 'unknown' without git (e.g. inside an Azure ML job's snapshot)."""
    out = _git(["status", "--porcelain", "--untracked-files=normal"], cwd)
    if out is None:
        return GIT_UNKNOWN
    return GIT_DIRTY if out.strip() else GIT_CLEAN


def lineage_tags(build_id: str = "", build_uri: str = "", cwd: str | None = None) -> dict[str, str]:
    """The registry tags every version carries about its origin (an empty value means not known)."""
    return {
        "git_commit": git_commit(cwd),
        "git_tree": git_tree(cwd),
        "build_id": build_id,
        "build_uri": build_uri,
    }
