"""The docs stay honest: every relative link in README.md and docs/*.md resolves (files, and anchors against the
target's headings), and every flag in their train.py, eval_superb.py and `python -m hf_corrdistill...` commands is one
that command's parser accepts (read from its --help, in-process)."""

import contextlib
import importlib
import io
import re
import shlex
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


def commands(path: Path) -> list[tuple[str, list[str]]]:
    """(parser key, the flags given) of each checked command in the shell code blocks of ``path``."""
    _, blocks = prose_and_code(path)
    found = []
    for language, lines in blocks:
        if language not in SHELL_FENCES:
            continue
        for line in "\n".join(lines).replace("\\\n", " ").splitlines():
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            for command in _split_commands(tokens):
                parsed = _parse(command)
                if parsed:
                    found.append(parsed)
    return found


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
    """The parser key and the --flags of one command, or None when it is not one of the checked commands."""
    for index, token in enumerate(tokens):
        if Path(token).name in SCRIPTS:  # python train.py, accelerate launch [flags] train.py, time ...
            return Path(token).name, _flags(tokens[index + 1:])
        if token == "-m" and index + 1 < len(tokens) and tokens[index + 1].startswith("hf_corrdistill"):
            module, rest = tokens[index + 1], tokens[index + 2:]
            if module == "hf_corrdistill.hub":
                module = f"{module} {rest[0]}" if rest else module
                rest = rest[1:]
            return module, _flags(rest)
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


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_command_flags_are_accepted(path):
    assert unknown_flags(path) == []


def test_the_docs_have_commands_to_check():
    keys = {key for path in DOCS for key, _ in commands(path)}
    assert {"train.py", "eval_superb.py", "hf_corrdistill.hub push", "hf_corrdistill.hub.export"} <= keys


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
