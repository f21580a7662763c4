"""A minimal PEP 517 build backend (standard library only) for this example package.

It builds a pure-Python wheel from the ``[project]`` table of pyproject.toml:
the modules listed in ``[tool.acme-build] modules``, METADATA, WHEEL,
entry_points.txt and RECORD (PEP 427, PEP 621 metadata, the entry-point file
format of the PyPA specifications).  No sdist: pip installs from the directory.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _project() -> tuple[dict, list[str]]:
    data = tomllib.loads((HERE / "pyproject.toml").read_text(encoding="utf-8"))
    return data["project"], data["tool"]["acme-build"]["modules"]


def _files(project: dict) -> tuple[str, dict[str, bytes]]:
    name = re.sub(r"[-_.]+", "_", project["name"]).lower()
    info = f"{name}-{project['version']}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}"]
    if "description" in project:
        metadata.append(f"Summary: {project['description']}")
    if "requires-python" in project:
        metadata.append(f"Requires-Python: {project['requires-python']}")
    metadata += [f"Requires-Dist: {d}" for d in project.get("dependencies", [])]
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items()) + "\n"
        for group, items in project.get("entry-points", {}).items()
    )
    files = {
        f"{info}/METADATA": ("\n".join(metadata) + "\n").encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: acme_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": entry_points.encode(),
    }
    return info, files


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    project, _ = _project()
    info, files = _files(project)
    for path, data in files.items():
        target = Path(metadata_directory) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project, modules = _project()
    info, files = _files(project)
    for module in modules:
        files[f"{module}.py"] = (HERE / f"{module}.py").read_bytes()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    name = info.removesuffix(".dist-info")
    wheel = f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel
