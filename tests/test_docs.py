"""README.md and docs/*.md say only what works: their links lead somewhere, their commands run as written.

* Every relative link (and its #anchor) points at a file (and a heading) that exists.
* Every `python -m ...`, `python app.py` and `train.py` command the pages show is asked for `--help` (the
  cheap way to run it as written) and every `--option` the pages give it must be one its help lists.
* The cheap lines are run exactly as written: the stand-in dataset, `examples fetch` from it (whose
  printed figure docs/examples.md quotes) and `examples list`.
* Every name in the limits table of docs/limits.md exists in the code.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from app_fixtures import REPO_ROOT, app_env

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)
#: A command of this project as the pages write it: `[.venv/bin/]python -m parts2whole...`, `python app.py`,
#: `[accelerate launch ...] train.py` (what follows, up to the end of the line or of the inline code).
COMMAND = re.compile(r"(?:python -m (?P<module>parts2whole[\w.]*)|(?:python|launch[^`\n]*?) (?P<script>app\.py|train\.py))"
                     r"(?P<rest>(?:[^`\n\\]|\\\n)*)")
#: Leading words of a command that name a subcommand (not a file, an option or a placeholder).
SUBCOMMAND = re.compile(r"[a-z][a-z_]*")
HELP_TIMEOUT_S = 120


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", _text(page)), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


def test_the_readme_is_a_front_page_and_the_docs_have_their_pages():
    assert len(_text(REPO_ROOT / "README.md").splitlines()) <= 250
    for topic in ("app", "api", "cli", "preprocessing", "examples", "batch", "performance", "fidelity", "training",
                  "deployment", "limits", "layout"):
        assert (REPO_ROOT / "docs" / f"{topic}.md").is_file(), topic


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", _text(page))):
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check offline
                continue
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            if not path.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no heading #{anchor} in {path.name})")
    assert not broken, broken


def _documented_commands() -> dict[tuple[str, ...], set[str]]:
    """(how to start it, subcommands...) -> the --options the pages give it."""
    commands: dict[tuple[str, ...], set[str]] = {}
    for page in PAGES:
        for match in COMMAND.finditer(_text(page)):
            rest = match["rest"].replace("\\\n", " ").split(" #", 1)[0]
            try:
                words = shlex.split(rest)
            except ValueError:  # an unbalanced quote in prose: keep the words before it
                words = rest.split()
            start = ("-m", match["module"]) if match["module"] else (match["script"],)
            subcommands = []
            for word in words:
                if not SUBCOMMAND.fullmatch(word):
                    break
                subcommands.append(word)
            options = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", rest))  # also inside [optional] brackets
            commands.setdefault((*start, *subcommands), set()).update(options)
    return commands


def test_the_docs_show_the_commands_people_run():
    shown = _documented_commands()
    for command in [("-m", "parts2whole", "generate"), ("-m", "parts2whole", "pose"), ("-m", "parts2whole", "batch"),
                    ("-m", "parts2whole", "examples", "fetch"), ("app.py",), ("train.py",)]:
        assert command in shown, sorted(shown)


#: Asks each command for --help in one Python process (the heavy imports are paid once), through the same
#: entry points `python -m MODULE` and `python SCRIPT` use; prints [exit code, help text] per command as JSON.
HELP_DRIVER = """
import contextlib, io, json, runpy, sys
answers = []
for command in json.loads(sys.argv[1]):
    module = command[1] if command[0] == "-m" else None
    words = command[2:] if module else command[1:]
    sys.argv = [module or command[0], *words, "--help"]
    text, code = io.StringIO(), 0
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(io.StringIO()):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True) if module else runpy.run_path(command[0], run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code or 0
    answers.append([code, text.getvalue()])
print(json.dumps(answers))
"""


def test_every_documented_command_answers_help_and_knows_its_options():
    commands = sorted(_documented_commands().items())
    completed = subprocess.run([sys.executable, "-c", HELP_DRIVER, json.dumps([list(command) for command, _ in commands])],
                               cwd=REPO_ROOT, env=app_env(), capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    assert completed.returncode == 0, completed.stderr[-2000:]
    problems = []
    for (command, options), (code, text) in zip(commands, json.loads(completed.stdout.splitlines()[-1])):
        text = text.split("\nexamples:", 1)[0]  # the options argparse knows, not the help's own examples
        if code != 0:
            problems.append(f"{' '.join(command)} --help: exit {code}")
        elif unknown := sorted(option for option in options if option not in text):
            problems.append(f"{' '.join(command)}: the docs give {unknown}, which --help does not list")
    assert not problems, problems


def test_the_top_level_help_runs_as_written():
    completed = subprocess.run([sys.executable, "-m", "parts2whole", "--help"], cwd=REPO_ROOT, env=app_env(),
                               capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    assert completed.returncode == 0 and all(name in completed.stdout for name in ("generate", "pose", "examples", "batch"))


def _bash_lines(page: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", _text(REPO_ROOT / "docs" / page), re.S)
    return [line for block in blocks for line in block.splitlines()]


def test_the_stand_in_fetch_runs_as_written_and_prints_the_figure_the_page_quotes(tmp_path):
    lines = _bash_lines("examples.md")
    commands = [line for line in lines if line.startswith(".venv/bin/python") and "/tmp/" in line]
    assert [command.split()[1] for command in commands] == ["tests/examples_standin.py", "-m"], commands
    commands.append(".venv/bin/python -m parts2whole examples list --cache /tmp/examples-cache")
    outputs = []
    for command in commands:
        words = [word.replace("/tmp/", f"{tmp_path}/") for word in shlex.split(command.split(" #", 1)[0])]
        completed = subprocess.run([sys.executable, *words[1:]], cwd=REPO_ROOT, env=app_env(), capture_output=True,
                                   text=True, timeout=HELP_TIMEOUT_S)
        assert completed.returncode == 0, (command, completed.stderr[-500:])
        outputs.append(completed.stdout)
    printed = " ".join(outputs[1].split())
    quoted = [line.lstrip("# ").strip() for line in lines if line.startswith("# read ") or line.startswith("#   ") and ".zip" in line]
    assert len(quoted) >= 3, quoted
    for line in quoted:
        assert " ".join(line.split()) in printed, (line, outputs[1])
    assert "8 examples" in outputs[2] and "24 poses" in outputs[2]


def test_every_name_in_the_limits_table_exists():
    page = _text(REPO_ROOT / "docs" / "limits.md")
    rows = [line for line in page.splitlines() if line.startswith("| ") and line.count("|") >= 4][2:]
    assert len(rows) >= 10, rows
    missing = []
    for row in rows:
        module = None
        for name in re.findall(r"`([\w.]+)`", row.rstrip(" |").rsplit("|", 1)[-1]):
            if "." in name:
                module, attribute = name.rsplit(".", 1)
            else:
                attribute = name
            try:
                getattr(importlib.import_module(module), attribute)
            except (ImportError, AttributeError, TypeError, ValueError):
                missing.append(f"{module}.{attribute}")
    assert not missing, missing
