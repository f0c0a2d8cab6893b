"""The product's name and version, as shown in Received headers and bounces."""

from __future__ import annotations

PRODUCT = "pydma"
VERSION = "0.1.0"
