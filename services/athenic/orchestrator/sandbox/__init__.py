"""Sandbox backends: where untrusted code runs (``local`` bubblewrap or ``e2b`` cloud)."""
