"""The dashboard at / (static files served by the API; libraries from npm, see package.json)."""
