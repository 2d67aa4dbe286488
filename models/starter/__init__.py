"""The starter family: a small trained bundle that ships with the product (see docs/starter.md)."""
