"""Map the repo's top-level folders to import names under ``edgectl.``.

The repo keeps readable top-level folders (tunnel/, server/, ...), but installing
them as top-level ``server`` or ``agent`` packages would squat generic names in
site-packages. Every folder is therefore installed as ``edgectl.<folder>``, and
common/ (what all of them share: CLI, config, logging, paths) is ``edgectl``.
"""
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
# folder -> import name
FOLDERS = {
    "common": "edgectl",
    "tunnel": "edgectl.tunnel",
    "lb": "edgectl.lb",
    "flannel": "edgectl.flannel",
    "netpol": "edgectl.netpol",
    "server": "edgectl.server",
    "agent": "edgectl.agent",
    "lab": "edgectl.lab",
}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for folder, name in FOLDERS.items():
        package_dir[name] = folder
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder)
            packages.append(".".join([name, *rel.parts]))
    return packages, package_dir


packages, package_dir = _packages()
setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"edgectl.lab": ["examples/*.yaml"]},
    include_package_data=True,
)
