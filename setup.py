"""Build hook (all other metadata is in pyproject.toml).

The built-in progress profiles live in profiles/ at the top of the repository, their source of
truth (design notes section 4). The build copies them into the package as lrs/profiles/, so an
installed package (`pip install .`, the Docker image) finds them without LRS_PROFILES_DIR. An
editable install reads profiles/ in the checkout instead (lrs.progress.profiles).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PROFILES = Path(__file__).resolve().parent / "profiles"


class BuildPyWithProfiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "lrs" / "profiles"
        self.mkpath(str(target))
        for source in sorted(PROFILES.glob("*.json")):
            self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildPyWithProfiles})
