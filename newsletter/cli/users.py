"""``newsletter user …``: the people who act on editions (roles, passwords).

A password is read from a prompt (twice, hidden) on a terminal, else one line of
stdin — never from argv, which every user of the machine can read.
"""

from __future__ import annotations

import sys

import click

from .. import users
from ..errors import InputError
from . import App, main, pass_app


@main.group()
def user() -> None:
    """Users: add, list, disable, passwd, logout-all."""


def _read_password(prompt: bool) -> str:
    if sys.stdin.isatty():
        return click.prompt("password", hide_input=True, confirmation_prompt=True)
    line = sys.stdin.readline().rstrip("\r\n")
    if not line and not prompt:
        raise InputError("password: give it on stdin (one line) or run on a terminal to be asked")
    return line


@user.command("add")
@click.argument("name")
@click.option("--email", required=True, help="The user's address.")
@click.option("--role", required=True, type=click.Choice(users.ROLES), help="What the user may do.")
@click.option("--password/--no-password", default=True, show_default=True,
              help="Ask for a password (prompt, or one line of stdin); --no-password for CLI-only users.")
@pass_app
def user_add(app: App, name, email, role, password):
    """Add user NAME with a role: editor, approver, operator or admin."""
    users.check_name(name)
    secret = _read_password(False) if password else None
    users.add_user(app.engine, name, email, role, secret)
    click.echo(f"user {name} added ({role})")


@user.command("list")
@pass_app
def user_list(app: App):
    """Users with their role and state."""
    for row in users.list_users(app.engine):
        state = "disabled" if row.disabled else "active"
        click.echo(f"{row.name}\t{row.email}\t{row.role}\t{state}\t{'password' if row.password_hash else '-'}")


@user.command("disable")
@click.argument("name")
@pass_app
def user_disable(app: App, name):
    """Disable user NAME (kept for the audit log; can no longer act or log in)."""
    if users.disable(app.engine, name):
        click.echo(f"user {name} disabled")
    else:
        click.echo(f"user {name} was already disabled")


@user.command("passwd")
@click.argument("name")
@pass_app
def user_passwd(app: App, name):
    """Set the password of user NAME (prompt, or one line of stdin)."""
    users.set_password(app.engine, name, _read_password(False))
    click.echo(f"password of {name} changed")


@user.command("logout-all")
@click.argument("name")
@pass_app
def user_logout_all(app: App, name):
    """End every console session of user NAME (a lost laptop, a changed role)."""
    count = users.logout_all(app.engine, name)
    click.echo(f"user {name}: {count} console session(s) ended")
