"""The docs run as written: every shell block of README.md and docs/*.md is read, and each
``extract …`` / ``fuse …`` command is parsed by the real CLI (subcommand, options, arguments,
values; nothing is run), ``make`` targets, ``python bench/…`` flags, ``pip install`` of this
project and the imports of Python blocks are checked; the cheap store commands (``extract ls /
inspect / verify / export / rm``, ``extract list``, ``fuse list``) are then run on a tiny store
made for them. A failure lists every problem as ``file:line: `command`: what is wrong``."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"", "bash", "sh", "shell", "console", "zsh"}
TOOLS = ("extract", "fuse", "python", "python3", "pip", "make", "hf", "huggingface-cli")
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "(", ")"}
PLACEHOLDER = re.compile(r"^(\.\.\.|…)$|^\[.*|.*\]$|^<[^>]*>$")
STALE = {"huggingface-cli": "current huggingface_hub ships `hf` (hf download REPO_ID)"}
CHEAP = {("extract", "list"), ("extract", "ls"), ("extract", "inspect"), ("extract", "verify"),
         ("extract", "export"), ("extract", "rm"), ("fuse", "list")}


@dataclass
class Command:
    """One command of a shell block: where it is and its words."""

    file: Path
    line: int
    argv: list[str]

    @property
    def where(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"

    def __str__(self) -> str:
        return shlex.join(self.argv)


def blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """Fenced blocks: (language, line number of the first content line, lines)."""
    out, lang, start, body = [], None, 0, []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        fence = re.match(r"^\s*```\s*([\w+-]*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1).lower(), n + 1, []
        elif fence:
            out.append((lang, start, body))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def shell_commands(path: Path) -> list[Command]:
    """The commands of every shell block (continuations joined, comments and prompts dropped,
    pipelines and ``&&`` lists split)."""
    commands = []
    for lang, start, body in blocks(path):
        if lang not in SHELL:
            continue
        logical: list[tuple[int, str]] = []
        pending, first = "", 0
        for i, line in enumerate(body):
            text = re.sub(r"^\s*\$\s+", "", line)
            if not pending:
                first = start + i
            if text.rstrip().endswith("\\"):
                pending += text.rstrip()[:-1] + " "
                continue
            logical.append((first, pending + text))
            pending = ""
        for n, text in logical:
            words = text.split()
            if not words or words[0] not in TOOLS:
                continue  # output, diagrams, layouts
            lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            try:
                tokens = list(lexer)
            except ValueError as exc:
                commands.append(Command(path, n, ["<unparsable>", text, str(exc)]))
                continue
            part: list[str] = []
            for tok in [*tokens, ";"]:
                if tok in OPERATORS:
                    if part:
                        commands.append(Command(path, n, part))
                    part = []
                else:
                    part.append(tok)
    return commands


def all_commands() -> list[Command]:
    return [c for path in DOCS for c in shell_commands(path)]


def _apps() -> dict[str, Any]:
    from extract.cli import app as extract_app
    from fuse.cli import app as fuse_app

    return {"extract": typer.main.get_command(extract_app),
            "fuse": typer.main.get_command(fuse_app)}


def parse_cli(argv: list[str], apps: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Parse ``extract …`` / ``fuse …`` with the real CLI; returns (subcommand, its parsed
    parameters) or raises ValueError saying what is wrong."""
    group, args = apps[argv[0]], argv[1:]
    options = {o: p for p in group.params for o in [*p.opts, *p.secondary_opts]}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        param = options.get(args[i].split("=")[0])
        if param is None:
            raise ValueError(f"`{argv[0]}` has no option {args[i]}")
        i += 1 if (getattr(param, "is_flag", False) or getattr(param, "count", False)
                   or "=" in args[i]) else 2
    if i >= len(args):
        raise ValueError("no subcommand")
    name, rest = args[i], args[i + 1:]
    cmd = group.get_command(None, name)
    if cmd is None:
        known = ", ".join(sorted(group.list_commands(None)))
        raise ValueError(f"`{argv[0]}` has no subcommand {name!r}; it has: {known}")
    bad = [t for t in rest if PLACEHOLDER.match(t)]
    if bad:
        raise ValueError(f"placeholder {bad[0]!r}: write a command that runs (synopses belong "
                         "in prose)")
    try:
        ctx = cmd.make_context(f"{argv[0]} {name}", list(rest))
    except typer.Exit:
        return name, {}
    except Exception as exc:  # click's usage errors (typer vendors click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        raise ValueError(message) from None
    return name, dict(ctx.params)


def check_other(cmd: Command) -> str | None:
    """What is wrong with a non-CLI command (``make``, ``python``, ``pip``, stale tools)."""
    tool, args = cmd.argv[0], cmd.argv[1:]
    if tool in STALE:
        return STALE[tool]
    if tool == "make":
        targets = set(re.findall(r"^([\w.-]+):", (REPO / "Makefile").read_text(), re.M))
        missing = [a for a in args if not a.startswith("-") and "=" not in a
                   and a not in targets]
        return f"the Makefile has no target {missing[0]!r}" if missing else None
    if tool in ("python", "python3"):
        if args[:1] == ["-m"] and len(args) > 1:
            import importlib.util

            module = args[1]
            if module.split(".")[0] in ("extract", "fuse") and "." not in module:
                return None  # checked as a CLI command
            return None if importlib.util.find_spec(module) else f"no module {module!r}"
        script = REPO / args[0] if args else None
        if script is None or not script.is_file():
            return f"no script {args[0] if args else '(none)'} in the repository"
        source = script.read_text()
        flags = [a.split("=")[0] for a in args[1:] if a.startswith("--")]
        unknown = [f for f in flags if f"{f!r}" not in source and f'"{f}"' not in source]
        return f"{args[0]} has no option {unknown[0]}" if unknown else None
    if tool == "pip":
        text = " ".join(args)
        if "affect-feature-store" in text:
            return ("affect-feature-store is not on a package registry: install from the "
                    "checkout (pip install -e '.[ray]')")
        for extra_list in re.findall(r"\.\[([\w,-]+)\]", text):
            import tomllib

            extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
                "optional-dependencies"]
            missing = [e for e in extra_list.split(",") if e not in extras]
            if missing:
                return f"pyproject.toml has no extra {missing[0]!r} (it has {sorted(extras)})"
    return None


def _normalise(argv: list[str]) -> list[str] | None:
    """``python -m extract …`` is ``extract …``; None for commands of other tools."""
    if argv[:3] in (["python", "-m", "extract"], ["python", "-m", "fuse"]):
        return argv[2:]
    return argv if argv[0] in ("extract", "fuse") else None


def test_docs_have_shell_commands():
    commands = all_commands()
    assert sum(_normalise(c.argv) is not None for c in commands) >= 20, len(commands)
    # the extractor sees continuations, comments, pipelines
    sample = shell_commands(DOCS[0])
    assert any(c.argv[:2] == ["extract", "run"] and "--store" in c.argv for c in sample)


def test_every_documented_command_matches_the_cli():
    apps = _apps()
    problems = []
    for cmd in all_commands():
        if cmd.argv[0] == "<unparsable>":
            problems.append(f"{cmd.where}: `{cmd.argv[1]}`: cannot be split into words: "
                            f"{cmd.argv[2]}")
            continue
        cli = _normalise(cmd.argv)
        try:
            problem = check_other(cmd) if cli is None else parse_cli(cli, apps) and None
        except ValueError as exc:
            problem = str(exc)
        if problem:
            problems.append(f"{cmd.where}: `{cmd}`: {problem}")
    assert not problems, "commands in the docs that do not run as written:\n" + "\n".join(
        problems)


def test_python_blocks_import_what_exists():
    problems = []
    for path in DOCS:
        for lang, start, body in blocks(path):
            if lang not in ("python", "py"):
                continue
            for i, line in enumerate(body):
                text = line.split("#")[0].strip()
                if not re.match(r"^(from\s+\S+\s+import\s+.+|import\s+\S+)$", text):
                    continue
                try:
                    exec(compile(text, str(path), "exec"), {})  # noqa: S102 (docs' imports)
                except ImportError as exc:
                    problems.append(f"{path.relative_to(REPO)}:{start + i}: `{text}`: {exc}")
    assert not problems, "imports in the docs that fail:\n" + "\n".join(problems)


def _tiny_store(path: Path, features: list[str], videos: list[str]) -> None:
    from extract.store import open_store

    store = open_store(path, "a")
    for feature in features:
        store.ensure_feature(feature, modality="visual", dim=3, extractor="docs-test",
                             config={"name": feature})
        for video in videos:
            store.write_video(feature, video, np.ones((4, 3), np.float32), np.arange(4) / 25)
    store.close()


def _cheap() -> list[tuple[Command, list[str], str, dict[str, Any]]]:
    apps, out = _apps(), []
    for cmd in all_commands():
        cli = _normalise(cmd.argv) if cmd.argv[0] != "<unparsable>" else None
        if cli is None:
            continue
        try:
            name, params = parse_cli(cli, apps)
        except ValueError:
            continue  # reported by test_every_documented_command_matches_the_cli
        if (cli[0], name) in CHEAP:
            out.append((cmd, cli, name, params))
    return out


@pytest.mark.parametrize("case", _cheap(), ids=lambda c: f"{c[0].where}")
def test_cheap_documented_commands_run_on_tiny_data(case, tmp_path, monkeypatch):
    cmd, cli, name, params = case
    monkeypatch.chdir(tmp_path)
    store = params.get("store")
    if store and "://" not in str(store):
        features = [params["feature"]] if params.get("feature") else ["emb"]
        one, many = params.get("video"), params.get("videos")
        videos = [*(many or []), *([one] if isinstance(one, str) else (one or []))]
        _tiny_store(tmp_path / store, features, [*videos, "clip_x"])
    if params.get("out"):
        (tmp_path / str(params["out"])).parent.mkdir(parents=True, exist_ok=True)
    from extract.cli import app as extract_app
    from fuse.cli import app as fuse_app

    app = extract_app if cli[0] == "extract" else fuse_app
    result = CliRunner().invoke(app, cli[1:])
    assert result.exit_code == 0, (f"{cmd.where}: `{cmd}` exited {result.exit_code} on a "
                                   f"tiny store:\n{result.output[-2000:]}")
