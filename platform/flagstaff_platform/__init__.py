"""The Flagstaff Django project (settings, URLs, ASGI); lives inside the `platform/` folder."""
