"""Talking to the image generation upstream: Ark's client (`ark`), and the demo
server (`demo`), an Ark-compatible stand-in for development and tests that
production neither installs nor imports."""
