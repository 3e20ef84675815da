"""The web interface: an HTTP server on the daemon's reactor (twisted.web
and Klein) with a JSON API under /api/v1 and server-rendered pages."""
