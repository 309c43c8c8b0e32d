"""The package's shape: layers whose imports point one way, self-contained model files, and a wheel that carries
everything the commands read (the model card template among it)."""

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, save_tiny_student

PACKAGE = ROOT / "hf_corrdistill"
# Each layer may import only the layers listed for it (and itself). Core: the student and the objectives.
ALLOWED = {
    "models": set(),
    "losses": set(),
    "data": set(),
    "utils": {"data"},  # helpers both sides share: file fingerprints, filter banks
    "training": {"models", "losses", "data", "utils"},
    "superb": {"models", "losses", "data", "utils", "training"},
    "hub": {"models", "losses", "data", "utils", "training", "superb"},
    "tools": {"models", "data", "utils"},
}
# The one import against the arrows, by design: train.py's --push_to_hub publishes the finished student.
EXCEPTIONS = {("hf_corrdistill.training.train_cli", "hub")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every hf_corrdistill module ``path`` imports, at any depth of the file (lazy imports included)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import x` imports x
    return {name for name in found if name.startswith("hf_corrdistill.")}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


def test_layers_import_only_the_layers_below_them():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        layer = _layer(module)
        if layer is None:
            continue
        for target in _imports(path):
            other = _layer(target)
            if other and other != layer and other not in ALLOWED[layer] and (module, other) not in EXCEPTIONS:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)
    # the graph test itself can fail: the core never reaches training, evaluation or the tools
    assert not any(_layer(t) in {"training", "superb", "tools", "hub"} for p in (PACKAGE / "losses").rglob("*.py")
                   for t in _imports(p))


def test_model_files_import_only_torch_transformers_and_each_other():
    """They are copied next to every saved student and imported there without this package."""
    for path in sorted((PACKAGE / "models" / "corrdistill").glob("*_corrdistill.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module == "configuration_corrdistill", (path.name, node.module)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for name in names:
                    assert name.split(".")[0] in {"torch", "transformers", "dataclasses", "math", "typing",
                                                  "collections"}, (path.name, name)


def test_requirements_are_ranges_and_the_set_up_pins_torch():
    """An exact pin would force one build of a package into every user's environment: the package states ranges,
    and the Makefile's set-up chooses the torch build of its machines."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for extra in project["optional-dependencies"].values() for r in extra]
    requirements = [*project["dependencies"], *extras]
    assert requirements and not [r for r in requirements if "==" in r or "===" in r]
    assert any(r.startswith("torch>=") for r in project["dependencies"])
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^TORCH \?= \d+\.\d+\.\d+$", makefile, re.M) and '"torch==$(TORCH)"' in makefile


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources, so that no build/ folder of an earlier build (setuptools reuses it) or of
    this one is left in the checkout."""
    source, folder = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    # the environment's own setuptools (a dev requirement): no build environment fetched from a package index
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
                    "-w", str(folder), str(source)], check=True, capture_output=True, timeout=600)
    (built,) = folder.glob("hf_corrdistill-*.whl")
    return built


def test_wheel_carries_the_card_template_and_the_wer_metric(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        template = archive.read("hf_corrdistill/hub/templates/student.md").decode()
    assert "hf_corrdistill/superb/wer/wer.py" in names
    assert "hf_corrdistill/models/corrdistill/modeling_corrdistill.py" in names
    assert template == (PACKAGE / "hub" / "templates" / "student.md").read_text()  # the file, not a link
    assert (ROOT / "model_cards" / "student.md").read_text() == template  # the repo's model_cards/ shows the same


def test_installed_copy_renders_a_card(wheel, tmp_path):
    """A non-editable install (the wheel unpacked into its own site folder, first on the path) stages a push."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    student = save_tiny_student(tmp_path / "student")
    probe = ("import sys, hf_corrdistill; print(hf_corrdistill.__file__); from hf_corrdistill.hub.push import main; "
             "main(sys.argv[1:])")
    result = subprocess.run(
        [sys.executable, "-c", probe, "push", str(student), "--repo_id", "someone/corr-student", "--dry_run",
         str(tmp_path / "staged")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0].startswith(str(site))  # the installed copy, not the checkout
    card = (tmp_path / "staged" / "README.md").read_text()
    assert "someone/corr-student" in card or "corr-student" in card
    assert "{{" not in card  # every template field was filled
