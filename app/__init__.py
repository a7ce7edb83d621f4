"""crosslens UI (Dash): talks to the API over HTTP only (``app.api_client``)."""
