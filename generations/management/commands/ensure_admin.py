"""Create the staff user `admin` on first run and print its generated password once.

`make run` calls this so that a newcomer can log in straight away; later runs find
the user and print nothing about its password.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Create the superuser 'admin' with a random password if no such user exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, username: str, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            if options["verbosity"] > 1:
                self.stdout.write(f"User {username!r} exists; its password is unchanged.")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.SUCCESS(f"Created staff user {username!r} with password: {password}")
        )
        self.stdout.write("This password is shown only once; change it in the admin.")
