"""Only the build hook: a wheel carries the world's checkpoints and the configs (physalign.assets reads them).

pyproject.toml holds the project's metadata. Building a wheel copies the repository's ``checkpoints/`` and
``configs/`` into the package as ``physalign/_shipped/``, so that an installed physalign runs the physics world
from any folder. An editable install (``pip install -e .``) reads them from the checkout instead.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("checkpoints", "configs")


class BuildWithShippedFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in SHIPPED:
            target = Path(self.build_lib) / "physalign" / "_shipped" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("*.pyc", "__pycache__"))


setup(cmdclass={"build_py": BuildWithShippedFiles})
