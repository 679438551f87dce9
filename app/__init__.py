"""HTTP serving of the exported CIFAR-10 SavedModel (FastAPI + uvicorn)."""
