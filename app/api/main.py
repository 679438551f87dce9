from app.api.routes import health, metrics, model, open_inference, predict, tf_serving

# Included one by one on the app: each level of nested routers costs FastAPI a route lookup
# per request.
routers = [
    predict.router,
    health.router,
    model.router,
    metrics.router,
    open_inference.operations,
    open_inference.router,
    tf_serving.operations,
    tf_serving.router,
]
