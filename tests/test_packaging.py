"""setup.cfg lists packages explicitly; every package folder must be listed."""
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"compiler": "onnxc", "passes": "onnxc.passes", "backends": "onnxc.backends", "models_zoo": "onnxc.models_zoo"}


def test_every_package_folder_is_listed_in_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = set()
    for folder, package in TOP_LEVEL.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *relative)))
    assert found - listed == set(), "add these to setup.cfg [options] packages"
