"""Shared, domain-free pieces every app uses (see DESIGN.md: the lowest room)."""
