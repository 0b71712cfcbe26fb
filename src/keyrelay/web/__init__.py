"""Server-rendered pages: Jinja2 templates (autoescaped), the security headers every page carries, CSRF tokens,
and the static assets shipped in the package. Used by the landing page, the API docs, the console and the
connect pages; no front-end build step.
"""
