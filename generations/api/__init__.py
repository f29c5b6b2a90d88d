"""The JSON API: its views, the token auth, and `serve`, which answers image bytes."""
