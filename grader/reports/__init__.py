"""Feedback pages, the summary, the render server, similarity."""
