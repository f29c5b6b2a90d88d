"""Backups: every row, and in a ZIP every stored image, written out and read back.

`bundle` is the format (its entries, and how a bundle is read and checked before
anything is written), `export` writes one, `importing` restores one.
"""
