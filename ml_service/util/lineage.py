"""Where a model came from: the commit and the CI build, when they are known."""

from __future__ import annotations

import os
import subprocess


def git_commit(cwd: str | None = None) -> str:
    """The commit being built: GIT_COMMIT (what an Azure ML job is given, its snapshot has no .git), the CI's
    variable (Azure DevOps, GitHub Actions), else git, else empty."""
    for name in ("GIT_COMMIT", "BUILD_SOURCEVERSION", "GITHUB_SHA"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""
