"""The demo upstream: an Ark-compatible image API that renders images locally.

A Django app of its own, so that its command (`manage.py demo_upstream`) exists only
where the settings install it: the embedded default and the tests, never production
unless the operator asks for the demo with GENVAULT_DEMO=1.
"""
