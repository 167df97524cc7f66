"""HTTP service: ``app.create_app`` (FastAPI) over ``service.Service`` (models, faces, results)."""
