"""The command line as a whole: help for every command, usage errors exit 2."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from newsletter import __version__
from newsletter.cli import main


def all_commands(group: click.Group = main, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


COMMANDS = dict(all_commands())


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Run in an empty folder with no config at all: help and usage errors must not need one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSLETTER_CONFIG", raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args), prog_name="newsletter")

    return invoke


def test_the_interface_commands_exist():
    for path in [
        ("init",), ("article", "add"), ("article", "import"), ("article", "list"), ("article", "show"),
        ("article", "edit"), ("article", "withdraw"), ("subscriber", "add"), ("subscriber", "import"),
        ("subscriber", "export"), ("subscriber", "list"), ("subscriber", "show"), ("subscriber", "set"),
        ("subscriber", "unsubscribe"), ("subscriber", "delete"), ("subscriber", "consent"),
    ]:
        assert path in COMMANDS, path


def test_main_help(run):
    for flag in ("--help", "-h"):
        result = run(flag)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("Usage: newsletter [OPTIONS] COMMAND [ARGS]...")
        for word in ("--config", "--verbose", "--version", "init", "article", "subscriber"):
            assert word in result.output
    bare = run()
    assert bare.exit_code in (0, 2) and "Usage: newsletter" in bare.output


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"newsletter, version {__version__}"


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_has_help_showing_its_options(run, path):
    command = COMMANDS[path]
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: newsletter {' '.join(path)} ")
    assert command.help, f"{' '.join(path)} has no help text"
    assert command.help.split("\n")[0].strip()[:30] in result.output
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert max(param.opts, key=len) in result.output, (path, param.opts)
        if isinstance(param, click.Argument):
            assert param.make_metavar(click.Context(command)) in result.output


@pytest.mark.parametrize(
    "args",
    [
        ("article", "add", "--title", "題名だけ"),  # missing --url and --field
        ("article", "show",),  # missing ARTICLE_ID
        ("article", "show", "一"),  # not an integer
        ("article", "import",),  # missing FILE_OR_URL
        ("article", "list", "--status", "archived"),  # bad choice
        ("article", "edit", "1", "--status", "published"),  # only draft/queued may be set
        ("subscriber", "add",),  # missing EMAIL
        ("subscriber", "add", "a@example.jp", "--format", "pdf"),  # bad --format choice
        ("subscriber", "add", "a@example.jp", "--charset", "shift_jis"),
        ("subscriber", "import",),
        ("subscriber", "import", "x.csv", "--encoding", "euc-jp"),
        ("subscriber", "export", "x.csv", "--status", "deleted"),
        ("subscriber", "list", "--status", "gone"),
        ("subscriber", "show",),
        ("subscriber", "unsubscribe",),
        ("subscriber", "set", "a@example.jp", "--format", "rtf"),
        ("subscriber", "nosuchverb",),
        ("nosuchnoun",),
        ("--no-such-option", "init"),
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2(run, args):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Usage: newsletter" in result.stderr
    assert "Error:" in result.stderr
    assert "Traceback" not in result.output


def test_set_with_nothing_to_change_is_a_usage_error(sqlite_project):
    sqlite_project("subscriber", "add", "a@example.jp", "--fields", "教育")
    result = sqlite_project("subscriber", "set", "a@example.jp", ok=False)
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr
