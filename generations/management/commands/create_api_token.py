"""Create a Bearer token for scripts calling the JSON API.

The token is printed once, alone on the last line, and only its hash is kept, so
it cannot be shown again: lose it and make another.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from generations.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USERNAME (a staff user) and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to tell this token apart.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        if not user.is_active or not user.is_staff:
            raise CommandError(f"user {username!r} must be an active staff user to use the API")
        key = ApiToken.new_key()
        ApiToken.objects.create(
            user=user, name=name, prefix=key[:10], key_hash=ApiToken.hash_key(key)
        )
        if options["verbosity"] > 0:
            self.stderr.write(f"Token for {username} (shown once, keep it safe):")
        self.stdout.write(key)
