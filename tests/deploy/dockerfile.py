"""deploy/docker/Dockerfile read and carried out without a docker daemon.

`build_image_env` runs the build stage's own instructions on this machine: the build context is
what Dockerfile.dockerignore lets in, each COPY copies from it, each RUN runs with `/bin/sh -c`
in the stage's WORKDIR with the stage's ENV. Only the root paths differ (`/opt/cairn` and `/app`
become directories under a temporary root) and pip may use its wheel cache, which changes where
wheels come from, not which are installed. What the services then import is exactly what the
image's install provides: a module the image lacks fails here as it would in a pod.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from cairn.stack.launcher import REPO_ROOT

DOCKERFILE = REPO_ROOT / "deploy" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "deploy" / "docker" / "Dockerfile.dockerignore"
# The image's absolute paths (the venv and the code) and their stand-ins under the build root.
IMAGE_ROOTS = ("/opt/cairn", "/app")


def instructions(stage: int | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined; `stage` picks one FROM block."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), rest.strip()))
    if stage is None:
        return parsed
    starts = [i for i, (k, _) in enumerate(parsed) if k == "FROM"]
    ends = [*starts[1:], len(parsed)]
    return parsed[starts[stage]:ends[stage]]


def env_of(stage: int) -> dict[str, str]:
    """The stage's ENV instructions (`KEY=value` pairs, space-separated)."""
    env: dict[str, str] = {}
    for keyword, args in instructions(stage):
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in args.split())
    return env


def in_build_context(path: str) -> bool:
    """Whether `path` (relative to the repository) is sent to the build, by .dockerignore rules.

    The last matching pattern wins and "!" re-includes; a pattern that matches a directory
    matches everything under it.
    """
    patterns = [line for line in DOCKERIGNORE.read_text().splitlines()
                if line and not line.startswith("#")]
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = True
    for pattern in patterns:
        bare = pattern.lstrip("!").rstrip("/")
        if any(fnmatch(prefix, bare) for prefix in prefixes):
            verdict = pattern.startswith("!")
    return verdict


def build_context(target: Path) -> Path:
    """Copy the files the build would receive into `target`."""
    for directory, subdirs, files in os.walk(REPO_ROOT):
        relative = Path(directory).relative_to(REPO_ROOT)
        # .git, .venv and the like hold nothing the build sees; skip walking them.
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            source = relative / name
            if in_build_context(source.as_posix()):
                (target / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO_ROOT / source, target / source)
    return target


@dataclass(frozen=True)
class ImageEnv:
    """The image's file system stand-in: its venv, its code, and the final stage's environment."""

    root: Path
    env: dict[str, str]

    def path(self, image_path: str) -> Path:
        """The local stand-in of an absolute path in the image (`/app`, `/opt/cairn/bin`)."""
        return Path(localize_paths(image_path, self.root))

    @property
    def app(self) -> Path:
        return self.path("/app")

    def which(self, command: str) -> str:
        found = shutil.which(command, path=self.env["PATH"])
        assert found is not None, f"{command} is not on the image's PATH"
        return found


def localize_paths(text: str, root: Path) -> str:
    for image_path in IMAGE_ROOTS:
        text = re.sub(rf"(?<![\w/.]){re.escape(image_path)}(?![\w.])",
                      str(root) + image_path, text)
    return text


def build_image_env(root: Path) -> ImageEnv:
    """Carry out the Dockerfile's build stage under `root`; return what the final stage sees."""
    context = build_context(root / "context")
    # The base image's `python`: this interpreter's own (not a venv's), first on PATH.
    base_bin = root / "base-bin"
    base_bin.mkdir()
    (base_bin / "python").symlink_to(Path(getattr(sys, "_base_executable", sys.executable)))
    system_path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {**env_of(0), "PATH": f"{base_bin}:{system_path}", "HOME": str(root)}
    env.pop("PIP_NO_CACHE_DIR", None)  # the wheel cache only makes the test faster
    workdir = root
    for keyword, args in instructions(0):
        args = localize_paths(args, root)
        if keyword == "WORKDIR":
            workdir = workdir / args
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, destination = args.split()
            # Docker: with several sources the destination is a directory ending in "/".
            assert len(sources) == 1 or destination.endswith("/"), f"COPY {args}"
            for source in sources:
                target = (Path(destination) if destination.startswith("/")
                          else workdir / destination)
                if (context / source).is_dir():
                    shutil.copytree(context / source, target, dirs_exist_ok=True)
                else:
                    if destination.endswith("/"):
                        target = target / Path(source).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(context / source, target)
        elif keyword == "RUN":
            result = subprocess.run(["/bin/sh", "-c", args], cwd=workdir, env=env,
                                    capture_output=True, text=True, timeout=600, check=False)
            assert result.returncode == 0, (
                f"RUN {args}\nexited {result.returncode}:\n{result.stdout[-3000:]}"
                f"\n{result.stderr[-3000:]}"
            )
        else:
            assert keyword in ("FROM", "ENV", "ARG"), f"cannot carry out {keyword} here"
    final = {k: localize_paths(v, root) for k, v in env_of(-1).items()}
    final["PATH"] = final["PATH"].replace("$PATH", system_path)
    return ImageEnv(root, final)
