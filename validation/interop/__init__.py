"""Forwarding shim: the foreign backends live in :mod:`refscore.validation.interop`."""
