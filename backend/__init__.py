"""crosslens API service (FastAPI): registry, uploads, jobs, auth, storage."""
