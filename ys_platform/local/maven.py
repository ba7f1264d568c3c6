"""Jars from Maven Central: a pom's runtime classpath, resolved once and cached per pom content."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ys_platform.local import procs
from ys_platform.local.state import INSTALL_HINT, LocalStackError

# Maven resolves the classpath in ~3 s from ~/.m2, and a first download of the 91 jars from
# Maven Central takes well under a minute; five minutes means the network is the problem.
MAVEN_TIMEOUT_S = 300.0


def classpath(pom: Path, cache_name: str, what: str) -> str:
    """The runtime classpath of pom, as Maven resolves it, cached per content of the pom.

    The cache, ``~/.cache/ys-platform/<cache_name>-<hash>.txt``, is keyed by the pom's content,
    so editing the pom (a version bump) resolves again.
    """
    if not pom.exists():
        raise LocalStackError(
            f"{pom} is missing from the installed package: reinstall ys-platform."
        )
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    # Outside the repository: a fresh clone (CI) reuses it, and `git clean` does not drop it.
    cache_dir = Path.home() / ".cache" / "ys-platform"
    cache = cache_dir / f"{cache_name}-{digest}.txt"
    if cache.exists():
        cached = cache.read_text().strip()
        # ~/.m2 may have been cleaned since: then resolve again rather than fail in the JVM.
        if cached and all(Path(jar).exists() for jar in cached.split(os.pathsep)):
            return cached
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalStackError(f"Maven (mvn) is needed to fetch {what}. {INSTALL_HINT}")
    procs.progress(f"local: resolving {what} with Maven (first run only) ...")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:build-classpath",
            f"-Dmdep.outputFile={tmp}",
        ],
        capture_output=True,
        text=True,
        timeout=MAVEN_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0 or not tmp.exists():
        raise LocalStackError(
            f"Maven could not resolve {what} (it needs Maven Central, or a filled ~/.m2):\n"
            + (result.stdout + result.stderr).strip()[-3000:]
        )
    tmp.replace(cache)
    return cache.read_text().strip()
