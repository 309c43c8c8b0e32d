"""The docs stay honest: every relative link in README.md and docs/*.md resolves (files, and anchors against the
target's headings); every flag in their train.py, eval_superb.py and `python -m hf_corrdistill...` commands, and in
the Makefile's, is one that command's parser accepts (read from its --help, in-process); the values of train.py and
eval_superb.py commands pass those commands' own checks (parsed, nothing run); and every file of this repository
that a command names exists."""

import contextlib
import importlib
import io
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
# Module commands: module -> (the module whose main() parses, arguments put before --help)
MODULES = {
    "hf_corrdistill.hub": ("hf_corrdistill.hub.push", None),  # sub-command first: `hub push --help`
    "hf_corrdistill.hub.export": ("hf_corrdistill.hub.export", []),
    "hf_corrdistill.tools.demo": ("hf_corrdistill.tools.demo", []),
    "hf_corrdistill.tools.superb_mini": ("hf_corrdistill.tools.superb_mini", []),
    "hf_corrdistill.tools.pretrain_teacher": ("hf_corrdistill.tools.pretrain_teacher", []),
}
SCRIPTS = {"train.py": "hf_corrdistill.training.train_cli", "eval_superb.py": "hf_corrdistill.superb.eval_cli"}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to hyphens."""
    text = re.sub(r"`|\*\*?", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    in_code = False
    for line in path.read_text().splitlines():
        if FENCE.match(line.strip()):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6}\s+(.*)", line)):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def prose_and_code(path: Path) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(lines outside code blocks, [(fence language, lines) of each code block])."""
    prose, blocks, current, language = [], [], None, ""
    for line in path.read_text().splitlines():
        match = FENCE.match(line.strip())
        if match and current is None:
            current, language = [], match.group(1)
        elif line.strip() == "```" and current is not None:
            blocks.append((language, current))
            current = None
        elif current is not None:
            current.append(line)
        else:
            prose.append(line)
    return prose, blocks


def broken_links(path: Path) -> list[str]:
    prose, _ = prose_and_code(path)
    text = re.sub(r"`[^`]*`", "", "\n".join(prose))  # links inside inline code are not links
    problems = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{path.relative_to(ROOT)}: {target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{path.relative_to(ROOT)}: {target}: no heading #{anchor} in {resolved.name}")
    return problems


def shell_lines(path: Path) -> list[str]:
    """The command lines of ``path``: its shell code blocks, or the recipes of a Makefile with its variables
    substituted (`$(BIN)/python` is `python`); continuation lines joined."""
    if path.name == "Makefile":
        text = path.read_text()
        variables = dict(re.findall(r"^([A-Z_]+) *[:?]?= *(.*?)\s*$", text, re.M))
        variables.update(BIN="", PYTHON="python", THREADS="2")
        recipes = "\n".join(line[1:] for line in text.replace("\\\n", " ").splitlines() if line.startswith("\t"))
        lines = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), recipes)
        return [line.replace("/python ", "python ").replace("/accelerate ", "accelerate ")
                for line in lines.splitlines()]
    _, blocks = prose_and_code(path)
    return [line for language, lines in blocks if language in SHELL_FENCES
            for line in "\n".join(lines).replace("\\\n", " ").splitlines()]


def shell_tokens(path: Path) -> list[list[str]]:
    """The words of each command line of ``path`` (lines the shell could not split are passed over)."""
    found = []
    for line in shell_lines(path):
        with contextlib.suppress(ValueError):
            found.append(shlex.split(line, comments=True))
    return found


def invocations(path: Path) -> list[tuple[str, list[str]]]:
    """(parser key, the arguments after the script or module) of each checked command of ``path``."""
    found = []
    for tokens in shell_tokens(path):
        for command in _split_commands(tokens):
            parsed = _parse(command)
            if parsed:
                found.append(parsed)
    return found


def commands(path: Path) -> list[tuple[str, list[str]]]:
    """(parser key, the flags given) of each checked command of ``path``."""
    return [(key, _flags(arguments)) for key, arguments in invocations(path)]


def _split_commands(tokens: list[str]) -> list[list[str]]:
    parts, current = [], []
    for token in tokens:
        if token in ("&&", "||", ";", "|"):
            parts.append(current)
            current = []
        else:
            current.append(token)
    return [*parts, current]


def _parse(tokens: list[str]) -> tuple[str, list[str]] | None:
    """The parser key and the arguments of one command, or None when it is not one of the checked commands."""
    for index, token in enumerate(tokens):
        if Path(token).name in SCRIPTS:  # python train.py, accelerate launch [flags] train.py, time ...
            return Path(token).name, tokens[index + 1:]
        if token == "-m" and index + 1 < len(tokens) and tokens[index + 1].startswith("hf_corrdistill"):
            module, rest = tokens[index + 1], tokens[index + 2:]
            if module == "hf_corrdistill.hub":
                module = f"{module} {rest[0]}" if rest else module
                rest = rest[1:]
            return module, rest
    return None


def _flags(tokens: list[str]) -> list[str]:
    return [token.split("=", 1)[0] for token in tokens if token.startswith("--") and len(token) > 2]


@cache
def accepted(key: str) -> frozenset[str]:
    """The flags the command's parser documents in its --help, printed in-process."""
    if key in SCRIPTS:
        module, before = SCRIPTS[key], []
    else:
        module_name, _, sub_command = key.partition(" ")
        if module_name not in MODULES:
            raise KeyError(f"no parser known for python -m {module_name}")
        module, before = MODULES[module_name]
        before = [sub_command] if before is None else before
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(io.StringIO()):
        try:
            importlib.import_module(module).main([*before, "--help"])
        except SystemExit:
            pass
    return frozenset(re.findall(r"(?<![\w-])--[A-Za-z0-9][\w-]*", output.getvalue()))


def unknown_flags(path: Path) -> list[str]:
    problems = []
    for key, flags in commands(path):
        try:
            known = accepted(key)
        except KeyError as error:
            problems.append(f"{path.relative_to(ROOT)}: {key}: {error}")
            continue
        problems += [f"{path.relative_to(ROOT)}: {key}: unknown flag {flag}" for flag in flags if flag not in known]
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(path):
    assert broken_links(path) == []


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def bad_values(path: Path) -> list[str]:
    """train.py commands through `read_config` and `preview_args` (every check before a model loads, the YAML file
    included), eval_superb.py commands through its parser and `EvalArguments`' checks; `--help` lines skipped."""
    from hf_corrdistill.superb.arguments import parse
    from hf_corrdistill.training.train_cli import preview_args, read_config

    checks = {"train.py": lambda arguments: preview_args(read_config(arguments)), "eval_superb.py": parse}
    problems = []
    for key, arguments in invocations(path):
        if key not in checks or "--help" in arguments:
            continue
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                checks[key](arguments)
        except (Exception, SystemExit) as error:
            problems.append(f"{_shown(path)}: {key}: {type(error).__name__}: {error}")
    return problems


REPO_PATH = re.compile(r"^(configs|demo_data|benchmarks|docs|tests|hf_corrdistill|model_cards)/\S*$")


def _ignored(name: str) -> bool:
    """Whether git ignores ``name`` (a run's work folder, written by the command rather than read by it)."""
    return subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT).returncode == 0


def missing_files(path: Path) -> list[str]:
    """Words of the command lines that name a file of this repository (configs/..., benchmarks/...) must exist,
    unless git ignores them (what a run writes)."""
    problems = []
    for tokens in shell_tokens(path):
        for token in tokens:
            named = token.split("=", 1)[-1]
            if REPO_PATH.match(named) and not (ROOT / named).exists() and not _ignored(named):
                problems.append(f"{_shown(path)}: {named}: no such file in the repository")
    return problems


CHECKED = [*DOCS, ROOT / "Makefile"]


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_command_flags_are_accepted(path):
    assert unknown_flags(path) == []


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_command_values_pass_the_commands_checks(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs and data are named relative to the repository
    assert bad_values(path) == []


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_named_by_commands_exist(path):
    assert missing_files(path) == []


def test_the_docs_have_commands_to_check():
    keys = {key for path in DOCS for key, _ in commands(path)}
    assert {"train.py", "eval_superb.py", "hf_corrdistill.hub push", "hf_corrdistill.hub.export"} <= keys
    makefile = dict(invocations(ROOT / "Makefile"))  # the demo's distillation and evaluation
    assert makefile["train.py"][:3] == ["configs/demo.yaml", "--output_dir", "outputs/demo"]
    assert {"--upstream", "--tasks", "--data"} <= set(_flags(makefile["eval_superb.py"]))


def test_a_bad_value_a_missing_file_and_a_makefile_recipe_are_caught(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("```bash\npython train.py configs/tiny.yaml --max_steps many\n"
                    "python eval_superb.py --upstream s=outputs/demo --tasks ks nope\n"
                    "python benchmarks/no_such_script.py --data configs/gone.yaml\n```\n")
    monkeypatch.chdir(ROOT)
    values, files = bad_values(page), missing_files(page)
    assert len(values) == 2 and "max_steps" in values[0] and "unknown task(s) ['nope']" in values[1]
    assert [problem.split(": ")[1] for problem in files] == ["benchmarks/no_such_script.py", "configs/gone.yaml"]
    makefile = tmp_path / "Makefile"
    makefile.write_text("BIN := .venv/bin\nDATA := data/x\n\ndemo:\n\t$(BIN)/python train.py configs/tiny.yaml \\\n"
                        "\t    --view_snr_min 30 --data_dir $(DATA)\n")
    assert invocations(makefile) == [("train.py", ["configs/tiny.yaml", "--view_snr_min", "30", "--data_dir",
                                                   "data/x"])]


def test_a_made_up_flag_is_caught(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("```bash\naccelerate launch --num_processes 2 train.py configs/demo.yaml \\\n"
                    "    --max_steps 5 --no_such_field 1\npython -m hf_corrdistill.hub push X --repo_id A/B --nope\n"
                    "```\n[gone](missing.md) [here](#page) [there](#nowhere)\n\n# Page\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert unknown_flags(page) == ["page.md: train.py: unknown flag --no_such_field",
                                   "page.md: hf_corrdistill.hub push: unknown flag --nope"]
    assert broken_links(page) == ["page.md: missing.md: no such file",
                                  "page.md: #nowhere: no heading #nowhere in page.md"]


def test_no_internal_notes_are_named():
    for path in DOCS:
        assert "METHOD.md" not in path.read_text(), f"{path.relative_to(ROOT)} names the internal method notes"
