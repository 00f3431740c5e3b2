"""The character server: OpenAI-compatible API, web page, terminal chat (see app.py)."""
